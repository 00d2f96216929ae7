"""What every Kiln task shares: validated settings, the target line, and one-line failures."""

from __future__ import annotations

import functools

from invoke import task as invoke_task
from invoke.exceptions import Exit

from cloud import settings as settings_module
from cloud.errors import KilnError


def kiln_task(*args, **kwargs):
    """Invoke's @task, plus: a KilnError becomes one line on stderr and exit status 1."""

    def decorate(body):
        @functools.wraps(body)
        def run(ctx, *a, **kw):
            try:
                return body(ctx, *a, **kw)
            except KilnError as error:
                raise Exit(f"kiln: {error}", code=1) from None
            except KeyboardInterrupt:
                raise Exit("kiln: interrupted", code=130) from None

        return invoke_task(*args, **kwargs)(run) if args or kwargs else invoke_task(run)

    if len(args) == 1 and callable(args[0]) and not kwargs:
        body, args = args[0], ()
        return decorate(body)
    return decorate


def settings(ctx) -> settings_module.Settings:
    return settings_module.load(ctx)


def pick(value, default):
    """A flag's value when given, else the config key of the same name."""
    return default if value is None else value


def whole(value, flag: str, minimum: int = 0) -> int:
    """A whole-number flag such as --keep 3 as an int, or one line naming the flag."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise KilnError(f"{flag}: {value!r} is not a whole number") from None
    if number < minimum:
        raise KilnError(f"{flag}: must be at least {minimum}, got {number}")
    return number
