"""ListAliases answers in pages, as KMS does.

AWS returns at most `Limit` aliases per call (1 to 100, default 50), with Truncated and a
NextMarker to ask for the rest (https://docs.aws.amazon.com/kms/latest/APIReference/
API_ListAliases.html). Every account also holds the AWS managed aliases (alias/aws/ebs, …), so a
reader that takes only the first page misses aliases in a lived-in account. moto answered every
alias at once.
"""

from __future__ import annotations

import json
from pathlib import Path

from sandbox.aws import seams

DEFAULT_LIMIT = 50


def apply(state_dir: Path) -> None:
    from moto.kms.responses import KmsResponse

    seams.wrap(KmsResponse, "list_aliases", _paged, signature="(self) -> str", owner=__name__)


def _paged(original):
    def list_aliases(self) -> str:
        answer = json.loads(original(self))
        aliases = answer["Aliases"]
        limit = int(self._get_param("Limit") or DEFAULT_LIMIT)
        start = int(self._get_param("Marker") or 0)
        page = aliases[start:start + limit]
        result = {"Aliases": page, "Truncated": start + limit < len(aliases)}
        if result["Truncated"]:
            result["NextMarker"] = str(start + limit)
        return json.dumps(result)

    return list_aliases
