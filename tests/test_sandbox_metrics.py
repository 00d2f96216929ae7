"""sandbox/network metrics and alarms: ALB metrics from real traffic, alarms evaluated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest

from tests.network_helpers import all_healthy, get, until


def metric(name: str, dims: dict, stat: str, since: datetime) -> float:
    """One value over the whole window since `since` (a single period)."""
    start = since.replace(second=0, microsecond=0)
    end = start + timedelta(minutes=10)
    result = boto3.client("cloudwatch").get_metric_data(
        StartTime=start, EndTime=end, MetricDataQueries=[{"Id": "m", "MetricStat": {
            "Metric": {"Namespace": "AWS/ApplicationELB", "MetricName": name,
                       "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()]},
            "Period": 600, "Stat": stat}}])["MetricDataResults"][0]
    assert result["Values"], f"no {name} {stat} for {dims}"
    return result["Values"][0]


def dims(lb, group: str | None = None) -> dict:
    found = {"LoadBalancer": lb["arn"].split(":loadbalancer/")[1]}
    if group:
        found["TargetGroup"] = lb["groups"][group].rsplit(":", 1)[1]
    return found


@pytest.fixture
def started():
    return datetime.now(UTC)


def test_requests_are_counted_by_load_balancer_and_target_group(lb, started):
    all_healthy(lb)
    lb["apps"]["green"].status = 500
    answers = [get(lb["dns"], 80)[0] for _ in range(200)]
    fives = answers.count(500)
    assert fives == 20

    def counted():
        assert metric("RequestCount", dims(lb), "Sum", started) == 200
        assert metric("RequestCount", dims(lb, "green"), "Sum", started) == 20
        assert metric("HTTPCode_Target_5XX_Count", dims(lb, "green"), "Sum", started) == 20
        assert metric("HTTPCode_Target_2XX_Count", dims(lb, "blue"), "Sum", started) == 180
        assert metric("HTTPCode_Target_5XX_Count", dims(lb), "Sum", started) == 20
        assert metric("HealthyHostCount", dims(lb, "blue"), "Maximum", started) == 1

    until(counted, timeout=10)
    p99 = metric("TargetResponseTime", dims(lb, "blue"), "p99", started)
    average = metric("TargetResponseTime", dims(lb, "blue"), "Average", started)
    assert 0 < average <= p99 < 5


def alarm(name: str, lb, group: str, **extra) -> None:
    settings = {"Statistic": "Sum", "Period": 60, "EvaluationPeriods": 1, "Threshold": 5,
                "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                "TreatMissingData": "notBreaching", **extra}
    boto3.client("cloudwatch").put_metric_alarm(
        AlarmName=name, Namespace="AWS/ApplicationELB", MetricName="HTTPCode_Target_5XX_Count",
        Dimensions=[{"Name": k, "Value": v} for k, v in dims(lb, group).items()], **settings)


def state(name: str) -> str:
    return boto3.client("cloudwatch").describe_alarms(
        AlarmNames=[name])["MetricAlarms"][0]["StateValue"]


def test_alarm_goes_to_alarm_on_errors_and_back_to_ok(lb):
    all_healthy(lb)
    alarm("green-5xx", lb, "green")
    alarm("blue-5xx", lb, "blue")
    lb["apps"]["green"].status = 500

    def fires():
        for _ in range(50):
            get(lb["dns"], 80)
        assert state("green-5xx") == "ALARM"

    until(fires, timeout=15)
    assert state("blue-5xx") == "OK"
    reason = boto3.client("cloudwatch").describe_alarms(
        AlarmNames=["green-5xx"])["MetricAlarms"][0]["StateReason"]
    assert reason.startswith("Threshold Crossed: 1 out of the last 1 datapoints")
    lb["apps"]["green"].status = 200
    until(lambda: _equal(state("green-5xx"), "OK"), timeout=10)


def test_missing_data_as_treat_missing_data_says(lb):
    alarm("missing", lb, "green", TreatMissingData="missing")
    alarm("breaching", lb, "green", TreatMissingData="breaching")
    until(lambda: _equal((state("missing"), state("breaching")),
                         ("INSUFFICIENT_DATA", "ALARM")), timeout=10)


def test_datapoints_to_alarm_m_of_n(lb):
    all_healthy(lb)
    alarm("two-of-three", lb, "green", EvaluationPeriods=3, DatapointsToAlarm=2, Threshold=1)
    lb["apps"]["green"].status = 500

    def fires():
        for _ in range(20):
            get(lb["dns"], 80)
        assert state("two-of-three") == "ALARM"

    until(fires, timeout=15)
    history = boto3.client("cloudwatch").describe_alarms(
        AlarmNames=["two-of-three"])["MetricAlarms"][0]["StateReason"]
    assert "out of the last 3 datapoints" in history


def test_set_alarm_state_holds_until_the_next_evaluation(lb):
    alarm("by-hand", lb, "green")
    cloudwatch = boto3.client("cloudwatch")
    until(lambda: _equal(state("by-hand"), "OK"))
    cloudwatch.set_alarm_state(AlarmName="by-hand", StateValue="ALARM", StateReason="test")
    assert state("by-hand") == "ALARM"
    until(lambda: _equal(state("by-hand"), "OK"), timeout=10)  # nothing breaches: back to OK


def _equal(actual, expected) -> None:
    assert actual == expected
