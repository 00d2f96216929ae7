"""What every Kiln task shares: validated settings, the target line, and one-line failures."""

from __future__ import annotations

import functools

from invoke import task as invoke_task
from invoke.exceptions import Exit
from invoke.tasks import Task

from cloud import settings as settings_module
from cloud.errors import KilnError, denied_line, lost_line

# Short flags mean one thing in every task; a flag not listed here has none (Invoke would pick
# its first free letter, so -s meant --share, --steps or --stack depending on the task).
SHORT_FLAGS = {"app": "a", "dry_run": "d", "json": "j", "keep": "k", "manifest": "m",
               "owner": "o", "percent": "p", "regions": "r", "stack": "s", "to": "t",
               "version": "v", "watch": "w", "yes": "y"}


class KilnTask(Task):
    """A task whose short flags come from SHORT_FLAGS only."""

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        short = SHORT_FLAGS.get(name)
        if short and short not in taken_names:
            opts["names"].append(short)
        return opts


def kiln_task(*args, required: tuple[str, ...] = (), **kwargs):
    """Invoke's @task, plus: a KilnError, or AWS refusing a call, becomes one line on stderr and
    exit status 1, and a flag named in `required` that is not given is one such line too (not
    Invoke's own message)."""

    def decorate(body):
        @functools.wraps(body)
        def run(ctx, *a, **kw):
            try:
                missing = [name for name in required if kw.get(name) is None]
                if missing:
                    flags = ", ".join(f"--{name.replace('_', '-')}" for name in missing)
                    raise KilnError(f"{body.__name__.replace('_', '.', 1)}: {flags} is required "
                                    f"(invoke --help {body.__name__.replace('_', '.', 1)})")
                return body(ctx, *a, **kw)
            except KilnError as error:
                raise Exit(f"kiln: {error}", code=1) from None
            except KeyboardInterrupt:
                raise Exit("kiln: interrupted", code=130) from None
            except Exception as error:
                line = denied_line(error) or lost_line(error)
                if line is None:
                    raise
                raise Exit(f"kiln: {line}", code=1) from None

        options = {"klass": KilnTask, "auto_shortflags": False, **kwargs}
        return invoke_task(*args, **options)(run)

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
