"""DescribeAlarms as CloudWatch answers it: without AlarmTypes, only metric alarms.

AWS behaviour mirrored here (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/
API_DescribeAlarms.html): "If you omit this parameter, only metric alarms are returned, even if
composite alarms exist in the account." moto returned both kinds whatever was asked.
"""

from __future__ import annotations

from pathlib import Path


def apply(state_dir: Path) -> None:
    from moto.cloudwatch.responses import CloudWatchResponse

    original = CloudWatchResponse.describe_alarms
    if getattr(original, "__wrapped__", None):
        return

    def describe_alarms(self):
        result = original(self)
        kinds = self._get_param("AlarmTypes") or ["MetricAlarm"]
        if "MetricAlarm" not in kinds:
            result.result["MetricAlarms"] = []
        if "CompositeAlarm" not in kinds:
            result.result["CompositeAlarms"] = []
        return result

    describe_alarms.__wrapped__ = original
    CloudWatchResponse.describe_alarms = describe_alarms
