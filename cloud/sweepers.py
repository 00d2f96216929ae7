"""The janitor's registry of leftover kinds: what each stage adds to `invoke janitor`.

A stage that creates temporary things (the bake's instances, the repository's uploads, the
self-service environments) registers a Sweeper here: how to find its leftovers in a place and how
to remove a batch of them. provisioner.janitor runs them all; living here, in the shared layer,
it lets every stage register without importing the janitor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass
class Leftover:
    kind: str
    id: str
    account: str
    region: str
    reason: str
    tags: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Sweeper:
    """One kind of leftover: how to find it in a place, and how to remove a batch of it.

    `order` sets when it runs: lower first (instances 10 … snapshots 50), so a kind is removed
    after whatever depends on it.
    """

    kind: str
    order: int
    find: Callable[[object, str, Callable[[dict[str, str]], str | None]], list[Leftover]]
    remove: Callable[[object, str, list[Leftover]], None]


SWEEPERS: list[Sweeper] = []


def register(sweeper: Sweeper) -> Sweeper:
    """Add a kind of leftover (e.g. expired self-service environments) to `invoke janitor`."""
    SWEEPERS[:] = [s for s in SWEEPERS if s.kind != sweeper.kind] + [sweeper]
    return sweeper
