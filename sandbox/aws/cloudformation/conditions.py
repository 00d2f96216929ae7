"""Conditions made of conditions, as CloudFormation evaluates them.

A YAML template writes a reference to another condition as `!Condition Name`
(https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/intrinsic-function-reference-
conditions.html); moto's YAML reading turns it into `{"Fn::Condition": Name}`, which its
evaluation does not know, so `!And`, `!Or` and `!Not` over conditions came out false and their
resources were silently not made. Here such a reference reads as `{"Condition": Name}`, the JSON
form moto evaluates.
"""

from __future__ import annotations

from pathlib import Path

from sandbox.aws import seams


def apply(state_dir: Path) -> None:
    from moto.cloudformation import parsing

    seams.wrap(parsing, "parse_condition", _with_references,
               signature="(condition: dict[str, typing.Any] | bool, resources_map: "
                         "'ResourceMap', condition_map: dict[str, typing.Any]) -> bool",
               owner=__name__)


def _with_references(parse):
    def parse_condition(condition, resources_map, condition_map):
        return parse(_references(condition), resources_map, condition_map)

    return parse_condition


def _references(node):
    if isinstance(node, dict):
        if set(node) == {"Fn::Condition"}:
            return {"Condition": node["Fn::Condition"]}
        return {key: _references(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_references(value) for value in node]
    return node
