"""sandbox/aws/cloudwatch/statistics.py: percentiles, and dimensions as a set."""

from datetime import UTC, datetime, timedelta

import boto3


def query(dimensions: list[dict], stat: str) -> list[float]:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    return boto3.client("cloudwatch").get_metric_data(
        StartTime=start, EndTime=start + timedelta(minutes=10), MetricDataQueries=[
            {"Id": "q", "MetricStat": {"Metric": {
                "Namespace": "Test", "MetricName": "Latency", "Dimensions": dimensions},
                "Period": 600, "Stat": stat}}])["MetricDataResults"][0]["Values"]


def test_percentiles_and_dimension_order(clean_sandbox):
    dims = [{"Name": "LoadBalancer", "Value": "app/web/1"},
            {"Name": "TargetGroup", "Value": "targetgroup/blue/2"}]
    boto3.client("cloudwatch").put_metric_data(Namespace="Test", MetricData=[{
        "MetricName": "Latency", "Dimensions": dims, "Values": [0.01, 0.02, 1.5],
        "Counts": [90, 9, 1], "Unit": "Seconds"}])
    assert query(dims, "p99") == [0.02]
    assert query(dims, "p100") == [1.5]
    assert query(list(reversed(dims)), "SampleCount") == [100.0]
