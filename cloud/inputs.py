"""Checks and parsers for what a release engineer types: durations, percentages, steps."""

from __future__ import annotations

import re

from cloud.errors import Refused

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")


def seconds(text: str | int, what: str) -> int:
    """'90', '90s', '5m', '4h', '1d' → seconds; `what` names the flag or key in the error."""
    if isinstance(text, int):
        return _not_negative(text, what)
    match = _DURATION.match(str(text))
    if not match:
        raise Refused(f"{what}: {text!r} is not a duration (e.g. 90s, 5m, 4h, 0)")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def _not_negative(value: int, what: str) -> int:
    if value < 0:
        raise Refused(f"{what}: must not be negative, got {value}")
    return value


def percent(value: int | str, what: str = "--percent") -> int:
    """A canary's share of traffic: a whole number from 1 to 99."""
    try:
        number = int(str(value).strip().rstrip("%"))
    except ValueError:
        raise Refused(f"{what}: {value!r} is not a whole number from 1 to 99") from None
    if not 1 <= number <= 99:
        raise Refused(f"{what}: {number} is outside 1–99 (a canary shares traffic with its "
                        "baseline; use promote for 100)")
    return number


def steps(text: str, what: str = "--steps") -> list[int]:
    """'25,50,100' → [25, 50, 100]: rising percentages that end at 100."""
    try:
        values = [int(part.strip().rstrip("%")) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise Refused(f"{what}: {text!r} is not a list of percentages like 25,50,100") from None
    if not values or values[-1] != 100:
        raise Refused(f"{what}: {text!r} must end at 100")
    if any(v < 1 or v > 100 for v in values) or values != sorted(set(values)):
        raise Refused(f"{what}: {text!r} must rise strictly, each from 1 to 100")
    return values


def human(total: int) -> str:
    """Seconds → '90s', '5m', '4h', '1h30m'."""
    if total == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
