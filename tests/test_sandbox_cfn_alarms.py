"""sandbox/aws/cloudformation/alarm_resources.py: CloudFormation alarms exist, and
LoadBalancerFullName resolves."""

import json

import boto3

from tests.deploy_helpers import env_stack

ALARM_ONLY = {"Resources": {"Errors": {"Type": "AWS::CloudWatch::Alarm", "Properties": {
    "AlarmName": "cfn-alarm-test", "Namespace": "AWS/ApplicationELB",
    "MetricName": "HTTPCode_Target_5XX_Count", "Statistic": "Sum", "Period": 60,
    "EvaluationPeriods": 1, "Threshold": 5, "ComparisonOperator": "GreaterThanThreshold"}}},
    "Outputs": {"Name": {"Value": {"Ref": "Errors"}}}}


def test_env_stack_alarms_watch_its_load_balancer(aws, clean_sandbox):
    outputs = env_stack(aws)
    names = outputs["AlarmNames"].split(",")
    alarms = boto3.client("cloudwatch").describe_alarms(AlarmNames=names)["MetricAlarms"]
    assert sorted(a["AlarmName"] for a in alarms) == sorted(names)
    full_name = outputs["LoadBalancerArn"].split(":loadbalancer/")[1]
    for alarm in alarms:
        assert alarm["Namespace"] == "AWS/ApplicationELB"
        assert alarm["Dimensions"] == [{"Name": "LoadBalancer", "Value": full_name}]
    latency = next(a for a in alarms if a["MetricName"] == "TargetResponseTime")
    assert latency["ExtendedStatistic"] == "p99" and latency["DatapointsToAlarm"] == 2


def test_alarm_goes_with_its_stack(clean_sandbox):
    cfn, cloudwatch = boto3.client("cloudformation"), boto3.client("cloudwatch")
    cfn.create_stack(StackName="alarm-only", TemplateBody=json.dumps(ALARM_ONLY))
    outputs = cfn.describe_stacks(StackName="alarm-only")["Stacks"][0]["Outputs"]
    assert outputs == [{"OutputKey": "Name", "OutputValue": "cfn-alarm-test"}]
    assert cloudwatch.describe_alarms(AlarmNames=["cfn-alarm-test"])["MetricAlarms"]
    cfn.delete_stack(StackName="alarm-only")
    assert cloudwatch.describe_alarms(AlarmNames=["cfn-alarm-test"])["MetricAlarms"] == []
