"""CloudFormation creates AWS::CloudWatch::Alarm resources (moto skips them silently), and
AWS::ElasticLoadBalancingV2::LoadBalancer answers GetAtt LoadBalancerFullName (the
`app/<name>/<id>` part of its ARN, the value of the `LoadBalancer` metric dimension).

Mirrors AWS: an alarm in a template exists once the stack is created, its Ref is the alarm name,
and deleting the stack deletes it.
"""

from pathlib import Path

from sandbox.aws import persistence, seams


def apply(state_dir: Path) -> None:
    from moto.cloudformation import parsing
    from moto.core.common_models import CloudFormationModel
    from moto.elbv2 import models as elbv2

    class CfnAlarm(CloudFormationModel):
        def __init__(self, name: str):
            self.name = name

        @property
        def physical_resource_id(self) -> str:
            return self.name

        @staticmethod
        def cloudformation_name_type() -> str:
            return "AlarmName"

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::CloudWatch::Alarm"

        @classmethod
        def has_cfn_attr(cls, attr: str) -> bool:
            return attr == "Arn"

        @classmethod
        def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                            region_name, **kwargs):
            _put_alarm(resource_name, cloudformation_json["Properties"], account_id, region_name)
            return cls(resource_name)

        @classmethod
        def update_from_cloudformation_json(cls, original_resource, new_resource_name,
                                            cloudformation_json, account_id, region_name):
            _backend(account_id, region_name).delete_alarms([original_resource.name])
            return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json,
                                                       account_id, region_name)

        @classmethod
        def delete_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                            region_name):
            _backend(account_id, region_name).delete_alarms([resource_name])

    persistence.by_name(CfnAlarm, __name__)  # stacks hold its instances
    parsing.get_model_map.cache_clear()
    parsing.get_name_type_map.cache_clear()

    def with_full_name(moto):
        def get_cfn_attribute(self, attribute_name):
            if attribute_name == "LoadBalancerFullName":
                return self.arn.split(":loadbalancer/", 1)[1]
            return moto(self, attribute_name)

        return get_cfn_attribute

    seams.wrap(elbv2.FakeLoadBalancer, "get_cfn_attribute", with_full_name,
               signature="(self, attribute_name: str) -> Any", owner=__name__)
    CfnAlarm.__module__ = __name__


def _backend(account_id: str, region_name: str):
    from moto.cloudwatch.models import cloudwatch_backends

    return cloudwatch_backends[account_id][region_name]


def _put_alarm(name: str, props: dict, account_id: str, region_name: str) -> None:
    _backend(account_id, region_name).put_metric_alarm(
        name=name, namespace=props.get("Namespace"), metric_name=props.get("MetricName"),
        comparison_operator=props["ComparisonOperator"],
        evaluation_periods=int(props["EvaluationPeriods"]), period=int(props.get("Period", 60)),
        threshold=float(props.get("Threshold", 0)), statistic=props.get("Statistic"),
        extended_statistic=props.get("ExtendedStatistic"),
        description=props.get("AlarmDescription", ""), dimensions=props.get("Dimensions", []),
        alarm_actions=props.get("AlarmActions", []), ok_actions=props.get("OKActions"),
        insufficient_data_actions=props.get("InsufficientDataActions"), unit=props.get("Unit"),
        actions_enabled=props.get("ActionsEnabled", True) in (True, "true", "True"),
        treat_missing_data=props.get("TreatMissingData"),
        datapoints_to_alarm=(int(props["DatapointsToAlarm"])
                             if props.get("DatapointsToAlarm") else None))
