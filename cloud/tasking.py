"""What every Kiln task shares: validated settings, the target line, and one-line failures."""

from __future__ import annotations

import functools
import signal
import threading
from contextlib import contextmanager

from invoke import task as invoke_task
from invoke.exceptions import Exit
from invoke.tasks import Task

from cloud import settings as settings_module
from cloud.errors import EXIT_FAILED, EXIT_INTERRUPTED, KilnError, Refused, denied_line, lost_line

# Short flags mean one thing in every task; a flag not listed here has none (Invoke would pick
# its first free letter, so -s meant --share, --steps or --stack depending on the task).
SHORT_FLAGS = {"app": "a", "dry_run": "d", "json": "j", "keep": "k", "manifest": "m",
               "owner": "o", "percent": "p", "regions": "r", "stack": "s", "to": "t",
               "version": "v", "watch": "w", "yes": "y"}


def check_runtime_file() -> None:
    """Invoke reads `-f FILE` (or INVOKE_RUNTIME_CONFIG) only after loading tasks.py, and answers
    a file it cannot parse with a traceback: read it first, and refuse it in one line."""
    import os

    import yaml
    from invoke.main import program

    args = getattr(program, "args", None)  # None unless the `invoke` command is running
    if args is None:
        return
    path = args.config.value or os.environ.get("INVOKE_RUNTIME_CONFIG")
    if not path or not str(path).endswith((".yaml", ".yml")) or not os.path.isfile(path):
        return
    try:
        with open(path, encoding="utf-8") as stream:
            yaml.safe_load(stream)
    except RecursionError:
        why = "nested too deeply"
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        why = " ".join(str(error).split())
    else:
        return
    raise Exit(f"kiln: {path}: not a YAML file Kiln can read ({why})", code=Refused.exit_code)


class KilnTask(Task):
    """A task whose short flags come from SHORT_FLAGS only."""

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        short = SHORT_FLAGS.get(name)
        if short and short not in taken_names:
            opts["names"].append(short)
        return opts


class Cancelled(KeyboardInterrupt):
    """SIGTERM (how a CI cancels a job), raised like Ctrl-C so every `with` unwinds."""


def _cancel(signum, _frame) -> None:
    raise Cancelled(signal.Signals(signum).name)


@contextmanager
def cancellable():
    """SIGTERM raises Cancelled for the block (main thread only), as SIGINT raises
    KeyboardInterrupt; a bake puts its own handler over it while it runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.signal(signal.SIGTERM, _cancel)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved)


def kiln_task(*args, required: tuple[str, ...] = (), **kwargs):
    """Invoke's @task, plus: a KilnError, or AWS refusing a call, becomes one line on stderr and
    the exit status of its kind (cloud/errors.py: 1 failed, 3 rolled back, 4 refused, 130
    interrupted by SIGINT or SIGTERM), and a flag named in `required` that is not given is one
    such line too (not Invoke's own message)."""

    def decorate(body):
        @functools.wraps(body)
        def run(ctx, *a, **kw):
            try:
                missing = [name for name in required if kw.get(name) is None]
                if missing:
                    flags = ", ".join(f"--{name.replace('_', '-')}" for name in missing)
                    raise Refused(f"{body.__name__.replace('_', '.', 1)}: {flags} is required "
                                  f"(invoke --help {body.__name__.replace('_', '.', 1)})")
                with cancellable():
                    return body(ctx, *a, **kw)
            except KilnError as error:
                raise Exit(f"kiln: {error}", code=error.exit_code) from None
            except KeyboardInterrupt:
                raise Exit("kiln: interrupted", code=EXIT_INTERRUPTED) from None
            except Exception as error:
                line = denied_line(error) or lost_line(error)
                if line is None:
                    raise
                raise Exit(f"kiln: {line}", code=EXIT_FAILED) from None

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
        raise Refused(f"{flag}: {value!r} is not a whole number") from None
    if number < minimum:
        raise Refused(f"{flag}: must be at least {minimum}, got {number}")
    return number
