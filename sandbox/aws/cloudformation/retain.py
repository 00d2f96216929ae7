"""A stack update that drops a resource whose DeletionPolicy is Retain leaves the resource in
place, as CloudFormation does (moto deleted every resource an update removed, whatever its
policy; it honoured Retain only when the whole stack was deleted)."""

from __future__ import annotations

from pathlib import Path

from sandbox.aws import seams


def apply(state_dir: Path) -> None:
    from moto.cloudformation.parsing import ResourceMap

    seams.wrap(ResourceMap, "_delete_resource", _retaining,
               signature="(self, parsed_resource: Any, resource_json: dict[str, typing.Any]) "
                         "-> None", owner=__name__)


def _retaining(moto):
    def delete_resource(self, parsed_resource, resource_json):
        if (resource_json or {}).get("DeletionPolicy") == "Retain":
            return None  # removed from the stack, kept in the account
        return moto(self, parsed_resource, resource_json)

    return delete_resource
