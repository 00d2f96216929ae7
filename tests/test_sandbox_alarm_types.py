"""sandbox/aws/cloudwatch/alarm_types.py: DescribeAlarms returns composite alarms when asked."""

import boto3


def test_describe_alarms_without_alarm_types_returns_metric_alarms_only(clean_sandbox):
    cloudwatch = boto3.client("cloudwatch")
    cloudwatch.put_metric_alarm(AlarmName="metric", MetricName="5xx", Namespace="AWS/ELB",
                                Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=1,
                                ComparisonOperator="GreaterThanThreshold")
    cloudwatch.put_composite_alarm(AlarmName="composite", AlarmRule='ALARM("metric")')
    names = ["metric", "composite"]
    plain = cloudwatch.describe_alarms(AlarmNames=names)
    assert [a["AlarmName"] for a in plain["MetricAlarms"]] == ["metric"]
    assert plain["CompositeAlarms"] == []
    both = cloudwatch.describe_alarms(AlarmNames=names,
                                      AlarmTypes=["MetricAlarm", "CompositeAlarm"])
    assert [a["AlarmName"] for a in both["CompositeAlarms"]] == ["composite"]
    only = cloudwatch.describe_alarms(AlarmNames=names, AlarmTypes=["CompositeAlarm"])
    assert only["MetricAlarms"] == [] and len(only["CompositeAlarms"]) == 1
