"""A stack whose resource fails to create rolls back, as CloudFormation does.

On AWS, CreateStack and ExecuteChangeSet answer at once; a resource the service then refuses
(IAM's "has been taken in this account" for a service-linked role the account already has, a key
policy naming a missing principal…) is CREATE_FAILED with the service's message as its reason,
what was already created is deleted, and the stack ends ROLLBACK_COMPLETE. moto raised the
service's error from CreateStack or ExecuteChangeSet itself and left a half-made stack behind.
Updates that fail are not rolled back here (see docs/sandbox.md).
"""

from __future__ import annotations

from pathlib import Path

from sandbox.aws import seams


class RolledBack(Exception):
    """The change set's stack was rolled back: ExecuteChangeSet still answers success."""


def apply(state_dir: Path) -> None:
    from moto.cloudformation.models import ChangeSet, Stack
    from moto.cloudformation.responses import CloudFormationResponse

    seams.wrap(Stack, "create_resources", _create_or_roll_back, signature="(self) -> 'None'",
               owner=__name__)
    seams.wrap(ChangeSet, "apply", _apply_or_roll_back, signature="(self) -> 'None'",
               owner=__name__)
    seams.wrap(CloudFormationResponse, "execute_change_set", _answer_rolled_back,
               signature="(self) -> moto.core.responses.ActionResult", owner=__name__)


def _refused(error: Exception) -> bool:
    """An error a service answered (not a fault of the sandbox's own code)."""
    from moto.core.exceptions import ServiceException
    from werkzeug.exceptions import HTTPException  # moto's RESTError and JsonRESTError

    return isinstance(error, (HTTPException, ServiceException))


def _create_or_roll_back(original):
    def create_resources(self) -> None:
        try:
            original(self)
        except Exception as error:
            if not _refused(error):
                raise
            roll_back(self, error)

    return create_resources


def _apply_or_roll_back(original):
    def apply(self) -> None:
        if self.change_set_type != "CREATE":
            return original(self)
        try:
            return original(self)
        except Exception as error:
            if not _refused(error):
                raise
            roll_back(self.stack, error)
            self.execution_status = "EXECUTE_FAILED"
            raise RolledBack() from error

    return apply


def _answer_rolled_back(original):
    def execute_change_set(self):
        from moto.core.responses import EmptyResult

        try:
            return original(self)
        except RolledBack:
            backend = self.cloudformation_backend
            name = self._get_param("StackName")
            stack = backend.get_stack(name) if name else None
            for change_set_id, change_set in list(backend.change_sets.items()):
                if stack is not None and change_set.stack_id == stack.stack_id:
                    del backend.change_sets[change_set_id]
            return EmptyResult()

    return execute_change_set


class NoOutputs(dict):
    """A rolled-back stack's outputs: none, and no exports."""

    exports: list = []


def roll_back(stack, error: Exception) -> None:
    """The failed resource's event, the created ones deleted, the stack ROLLBACK_COMPLETE."""
    resources = stack.resource_map
    failed = _failed_resource(resources)
    if failed is not None:
        _resource_event(stack, failed, "CREATE_FAILED", _message(error))
    stack.status = "ROLLBACK_IN_PROGRESS"
    stack._add_stack_event("ROLLBACK_IN_PROGRESS",
                           resource_status_reason="The following resource(s) failed to create: "
                                                  f"[{failed}]. Rollback requested by user.")
    created = [(name, parsed) for name, parsed in resources._parsed_resources.items()
               if not isinstance(parsed, str) and parsed is not None
               and name in resources._resource_json_map]
    for name, parsed in reversed(created):
        try:
            resources._delete_resource(parsed, resources._resource_json_map[name])
        except Exception:  # noqa: BLE001 - AWS goes on and reports DELETE_FAILED; so do we
            _resource_event(stack, name, "DELETE_FAILED", "could not be deleted")
            continue
        resources._parsed_resources.pop(name, None)
        _resource_event(stack, name, "DELETE_COMPLETE", None)
    stack.output_map = NoOutputs()
    stack.status = "ROLLBACK_COMPLETE"
    stack._add_stack_event("ROLLBACK_COMPLETE")


def _failed_resource(resources) -> str | None:
    """The first resource in the template that was not made."""
    for name in resources._resource_json_map:
        if name not in resources._parsed_resources:
            return name
    return None


def _message(error: Exception) -> str:
    return getattr(error, "message", None) or getattr(error, "description", None) or str(error)


def _resource_event(stack, logical_id: str, status: str, reason: str | None) -> None:
    from moto.cloudformation.models import Event

    kind = stack.resource_map._resource_json_map.get(logical_id, {}).get("Type", "")
    stack.events.append(Event(stack_id=stack.stack_id, stack_name=stack.name,
                              logical_resource_id=logical_id, physical_resource_id="",
                              resource_type=kind, resource_status=status,
                              resource_status_reason=reason, resource_properties=None))
