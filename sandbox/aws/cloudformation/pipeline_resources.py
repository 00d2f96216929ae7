"""CloudFormation makes AWS::CodePipeline::Pipeline and AWS::CodeBuild::Project (moto skips
both with a warning: it has neither resource).

As AWS documents them: the template's properties are the API's (PascalCase to camelCase; an
action's Configuration is kept as it is, its values as text), Ref is the name (given, or
`<stack>-<logical id>-<random>`), GetAtt Arn (a project's) and Version (a pipeline's) resolve.
A pipeline is made through CreatePipeline, so its role must trust codepipeline.amazonaws.com and
it needs two stages, as AWS checks; DisableInboundStageTransitions are disabled at creation; a
new pipeline starts an execution (trigger CreatePipeline), and an update starts one when
RestartExecutionOnUpdate is true, as on AWS. A stack update changes the pipeline or project in
place (UpdatePipeline, a new version; a project keeps its builds), under the same name unless
the template names another; deleting the stack deletes them.
"""

from __future__ import annotations

import copy
from pathlib import Path

from sandbox.aws import persistence

KEPT_AS_IS = {"Configuration"}  # an action's configuration keys are the provider's own


def apply(state_dir: Path) -> None:
    from moto.cloudformation import parsing
    from moto.core.common_models import CloudFormationModel

    class Pipeline(CloudFormationModel):
        def __init__(self, name: str, account_id: str, region_name: str):
            self.name, self.account_id, self.region_name = name, account_id, region_name

        @property
        def physical_resource_id(self) -> str:
            return self.name

        @staticmethod
        def cloudformation_name_type() -> str:
            return "Name"

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::CodePipeline::Pipeline"

        @classmethod
        def has_cfn_attr(cls, attr: str) -> bool:
            return attr == "Version"

        def get_cfn_attribute(self, attribute_name: str):
            return str(_pipelines(self.account_id, self.region_name)
                       .get_pipeline(self.name).pipeline["version"])

        @classmethod
        def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                            region_name, **kwargs):
            _create_pipeline(resource_name, cloudformation_json["Properties"], account_id,
                             region_name)
            return cls(resource_name, account_id, region_name)

        @classmethod
        def update_from_cloudformation_json(cls, original_resource, new_resource_name,
                                            cloudformation_json, account_id, region_name):
            properties = cloudformation_json["Properties"]
            new_resource_name = _kept_name(original_resource, properties)
            backend = _pipelines(account_id, region_name)
            if new_resource_name != original_resource.name:
                backend.delete_pipeline(original_resource.name)
                return cls.create_from_cloudformation_json(new_resource_name,
                                                           cloudformation_json, account_id,
                                                           region_name)
            backend.update_pipeline(pipeline_definition(new_resource_name, properties))
            if _true(properties.get("RestartExecutionOnUpdate")):
                backend.start_pipeline_execution(new_resource_name, None)
            return cls(new_resource_name, account_id, region_name)

        @classmethod
        def delete_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                            region_name):
            _pipelines(account_id, region_name).delete_pipeline(resource_name)

        def delete(self, account_id: str, region_name: str) -> None:
            _pipelines(account_id, region_name).delete_pipeline(self.name)

    class Project(CloudFormationModel):
        def __init__(self, name: str, arn: str):
            self.name, self.arn = name, arn

        @property
        def physical_resource_id(self) -> str:
            return self.name

        @staticmethod
        def cloudformation_name_type() -> str:
            return "Name"

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::CodeBuild::Project"

        @classmethod
        def has_cfn_attr(cls, attr: str) -> bool:
            return attr == "Arn"

        def get_cfn_attribute(self, attribute_name: str):
            return self.arn

        @classmethod
        def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                            region_name, **kwargs):
            made = _create_project(resource_name, cloudformation_json["Properties"],
                                   account_id, region_name)
            return cls(resource_name, made["arn"])

        @classmethod
        def update_from_cloudformation_json(cls, original_resource, new_resource_name,
                                            cloudformation_json, account_id, region_name):
            new_resource_name = _kept_name(original_resource, cloudformation_json["Properties"])
            backend = _builds(account_id, region_name)
            # The same project, changed: its builds stay its own (moto's create forgets them).
            history = backend.build_history.get(original_resource.name, [])
            backend.delete_project(original_resource.name)
            made = cls.create_from_cloudformation_json(new_resource_name, cloudformation_json,
                                                       account_id, region_name)
            if new_resource_name == original_resource.name:
                backend.build_history[new_resource_name] = history
            return made

        @classmethod
        def delete_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                            region_name):
            _builds(account_id, region_name).delete_project(resource_name)

        def delete(self, account_id: str, region_name: str) -> None:
            _builds(account_id, region_name).delete_project(self.name)

    Pipeline.__module__ = Project.__module__ = __name__
    persistence.by_name(Pipeline, __name__)  # stacks hold their instances: snapshots pickle them
    persistence.by_name(Project, __name__)
    parsing.get_model_map.cache_clear()
    parsing.get_name_type_map.cache_clear()


def _kept_name(original, properties: dict) -> str:
    """An update keeps the resource's name unless the template names another (moto generated a
    new name for every update of a resource the template does not name, replacing it)."""
    return properties.get("Name") or original.name


def _pipelines(account_id: str, region_name: str):
    from moto.codepipeline.models import codepipeline_backends

    return codepipeline_backends[account_id][region_name]


def _builds(account_id: str, region_name: str):
    from moto.codebuild.models import codebuild_backends

    return codebuild_backends[account_id][region_name]


def camel(value, key: str | None = None):
    """A template's value as the API's: keys from PascalCase to camelCase, except inside an
    action's Configuration, whose values are text."""
    if key in KEPT_AS_IS and isinstance(value, dict):
        return {k: _text(v) for k, v in value.items()}
    if isinstance(value, dict):
        return {k[:1].lower() + k[1:]: camel(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [camel(v, key) for v in value]
    return value


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _true(value) -> bool:
    return str(value).lower() == "true"


def pipeline_definition(name: str, properties: dict) -> dict:
    """CreatePipeline's `pipeline` from the resource's properties."""
    kept = {k: v for k, v in properties.items()
            if k not in ("Name", "Tags", "DisableInboundStageTransitions",
                         "RestartExecutionOnUpdate")}
    definition = camel(copy.deepcopy(kept))
    definition["name"] = name
    return definition


def _create_pipeline(name: str, properties: dict, account_id: str, region_name: str) -> None:
    from sandbox.aws.codepipeline.executions import creating

    backend = _pipelines(account_id, region_name)
    tags = [{"key": t["Key"], "value": t["Value"]} for t in properties.get("Tags") or []]
    disabled = [(d["StageName"], d.get("Reason")) for d in
                properties.get("DisableInboundStageTransitions") or []]
    # Disabled before the first execution (CreatePipeline starts one) reaches them.
    with creating(disabled):
        backend.create_pipeline(pipeline_definition(name, properties), tags)


def _create_project(name: str, properties: dict, account_id: str, region_name: str) -> dict:
    from moto.codebuild.responses import (
        _validate_required_params_artifacts,
        _validate_required_params_environment,
        _validate_required_params_project_name,
        _validate_required_params_service_role,
        _validate_required_params_source,
    )

    source = camel(copy.deepcopy(properties["Source"]))
    if "buildSpec" in source:  # the API's name is `buildspec`
        source["buildspec"] = source.pop("buildSpec")
    artifacts = camel(copy.deepcopy(properties["Artifacts"]))
    environment = camel(copy.deepcopy(properties["Environment"]))
    role = properties["ServiceRole"]
    if not role.startswith("arn:"):
        role = f"arn:aws:iam::{account_id}:role/{role}"
    # CreateProject's checks; moto's want a location even where AWS has none (CODEPIPELINE)
    placed = {"location": "codepipeline"}
    _validate_required_params_source({**placed, **source} if source["type"] == "CODEPIPELINE"
                                     else source)
    _validate_required_params_service_role(account_id, region_name, role)
    _validate_required_params_artifacts({**placed, **artifacts}
                                        if artifacts["type"] == "CODEPIPELINE" else artifacts)
    _validate_required_params_environment(environment)
    _validate_required_params_project_name(name)
    return _builds(account_id, region_name).create_project(
        project_name=name, description=properties.get("Description"), project_source=source,
        artifacts=artifacts, environment=environment, service_role=role,
        tags=[{"key": t["Key"], "value": t["Value"]} for t in properties.get("Tags") or []],
        cache=camel(properties.get("Cache")), timeout=properties.get("TimeoutInMinutes"),
        queued_timeout=properties.get("QueuedTimeoutInMinutes"),
        source_version=properties.get("SourceVersion"),
        logs_config=camel(properties.get("LogsConfig")),
        vpc_config=camel(properties.get("VpcConfig")))
