"""Where the sandbox replaces moto's code: each replacement declared, checked, and owned once.

Every module under sandbox/aws replaces a moto attribute only through `wrap` or `replace`, naming
the signature the replacement was written against, and adds one moto lacks only through `add`.
Before the server serves, each replaced attribute must still exist in the installed moto with that
signature (and an added one must still be missing), and no attribute may be replaced by two
modules (the result would depend on the order they are applied in). A moto upgrade that
changes one fails here, at start-up, in one line naming the attribute and moto's version, rather
than as a wrong answer later.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field


class SeamChanged(Exception):
    """moto no longer has an attribute the sandbox replaces, in the shape it was written for."""


@dataclass
class Seam:
    name: str  # moto's dotted name of the attribute
    owner: str  # the sandbox module that replaces it
    signature: str | None  # of moto's original, None for a non-callable attribute
    targets: set[int] = field(default_factory=set)  # ids of what was replaced (class, backends)


SEAMS: dict[str, Seam] = {}


def moto_version() -> str:
    try:
        import moto

        return moto.__version__
    except Exception:  # noqa: BLE001 - the version only labels the message
        return "unknown"


def dotted(target, name: str) -> str:
    if inspect.ismodule(target):
        return f"{target.__name__}.{name}"
    kind = target if inspect.isclass(target) else type(target)
    return f"{kind.__module__}.{kind.__qualname__}.{name}"


def signature_of(value) -> str | None:
    function = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
    if isinstance(function, property):
        function = function.fget
    if not callable(function):
        return None
    try:
        return str(inspect.signature(function))
    except (TypeError, ValueError):
        return None


def original(target, name: str, signature: str | None, owner: str):
    """moto's attribute, checked: it exists, has `signature`, and no other module owns it."""
    full = dotted(target, name)
    seen = SEAMS.get(full)
    if seen is not None and seen.owner != owner:
        raise SeamChanged(f"{full} is replaced by both {seen.owner} and {owner}: give it one "
                          f"owner")
    if not hasattr(target, name):
        raise SeamChanged(f"moto {moto_version()} has no {full}, which {owner} replaces")
    found = signature_of(inspect.getattr_static(target, name))
    if signature is not None and found != signature and id(target) not in _targets(full):
        raise SeamChanged(f"moto {moto_version()} changed {full}{found or ''}: {owner} was "
                          f"written against {name}{signature}")
    return getattr(target, name)


def wrap(target, name: str, wrapper, *, signature: str | None, owner: str) -> None:
    """Replace moto's `target.name` with `wrapper(moto's own)`. `signature` is moto's, as
    inspect prints it (None for a plain value); `owner` is the replacing module's __name__. The
    same owner wrapping the same target again changes nothing."""
    full = dotted(target, name)
    moto = original(target, name, signature, owner)
    if id(target) in _targets(full):
        return
    setattr(target, name, wrapper(moto))
    SEAMS.setdefault(full, Seam(full, owner, signature)).targets.add(id(target))


def replace(target, name: str, new, *, signature: str | None, owner: str) -> None:
    """Replace moto's `target.name` with `new` (see wrap)."""
    wrap(target, name, lambda _moto: new, signature=signature, owner=owner)


def add(target, name: str, value, *, owner: str) -> None:
    """Give moto's `target` an attribute it does not define (an operation moto does not answer, or
    a property over what its instances keep). A moto that defines it itself refuses, as for a
    changed signature: the sandbox's would hide moto's. Again by the same owner: nothing."""
    full = dotted(target, name)
    seen = SEAMS.get(full)
    if seen is not None and seen.owner != owner:
        raise SeamChanged(f"{full} is replaced by both {seen.owner} and {owner}: give it one "
                          f"owner")
    if id(target) in _targets(full):
        return
    if hasattr(target, name):
        raise SeamChanged(f"moto {moto_version()} now has {full}, which {owner} adds")
    setattr(target, name, value)
    SEAMS.setdefault(full, Seam(full, owner, None)).targets.add(id(target))


def _targets(full: str) -> set[int]:
    seen = SEAMS.get(full)
    return seen.targets if seen is not None else set()


def uses(module: str, name: str, owner: str):
    """A moto attribute the sandbox calls but does not replace (its server's WSGI parts): it
    must exist, or the server refuses to start naming it."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise SeamChanged(f"moto {moto_version()} has no {module}.{name}, which {owner} "
                          f"uses") from None
