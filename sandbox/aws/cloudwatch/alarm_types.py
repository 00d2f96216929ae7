"""Composite alarms, and DescribeAlarms as CloudWatch answers it: without AlarmTypes, only
metric alarms.

AWS behaviour mirrored here (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/
API_DescribeAlarms.html): "If you omit this parameter, only metric alarms are returned, even if
composite alarms exist in the account." moto returned both kinds whatever was asked, and its
server does not answer PutCompositeAlarm (its backend stores a composite alarm as an alarm with
a rule): the sandbox takes it. Composite alarms do not evaluate their rule in the sandbox (no
alarm evaluates there); tests set their state with SetAlarmState.
"""

from __future__ import annotations

from pathlib import Path

from sandbox.aws import seams


def apply(state_dir: Path) -> None:
    from moto.cloudwatch.responses import CloudWatchResponse

    seams.wrap(CloudWatchResponse, "describe_alarms", _by_type,
               signature="(self) -> moto.core.responses.ActionResult", owner=__name__)
    seams.add(CloudWatchResponse, "put_composite_alarm", _put_composite_alarm, owner=__name__)


def _by_type(moto):
    def describe_alarms(self):
        result = moto(self)
        kinds = self._get_param("AlarmTypes") or ["MetricAlarm"]
        if "MetricAlarm" not in kinds:
            result.result["MetricAlarms"] = []
        if "CompositeAlarm" not in kinds:
            result.result["CompositeAlarms"] = []
        return result

    return describe_alarms


def _put_composite_alarm(self):
    from moto.core.responses import EmptyResult

    self.cloudwatch_backend.put_metric_alarm(
        name=self._get_param("AlarmName"), namespace=None, metric_name=None,
        comparison_operator=None, evaluation_periods=None, period=None, threshold=None,
        statistic=None, description=self._get_param("AlarmDescription"), dimensions=[],
        alarm_actions=self._get_param("AlarmActions", []),
        ok_actions=self._get_param("OKActions", []),
        insufficient_data_actions=self._get_param("InsufficientDataActions", []),
        actions_enabled=self._get_param("ActionsEnabled", True),
        rule=self._get_param("AlarmRule"), tags=self._get_param("Tags", []))
    return EmptyResult()
