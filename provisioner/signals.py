"""SIGINT and SIGTERM as exceptions, so a bake's stack of context managers unwinds on either.

Inside `interruptible()`, the first SIGINT or SIGTERM raises `Interrupted` where the bake is, and
the `with` blocks above it release what they hold. Two things keep that release complete:

- `shielded()` wraps each create call: a signal arriving while AWS is creating a resource is held
  until the call has returned and its id is known; `check()`, the first thing inside the
  resource's cleanup `try`, raises it. No resource is ever created unseen.
- After the first signal, later ones only print a line: cleanup is never cut short by a second
  Ctrl-C. (What a kill -9 leaves, the janitor finds by tag and expiry.)
- Once releasing has begun (the bake's teardown step, the first release, or an exception already
  unwinding), even the first signal only waits: raised at the next `check()`, never between two
  releases, where it would skip the later ones.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

from cloud.console import say


class Interrupted(KeyboardInterrupt):
    """The bake was asked to stop by SIGINT or SIGTERM."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _State:
    def __init__(self):
        self.shield_depth = 0
        self.pending: int | None = None
        self.raised = False
        self.signum: int | None = None
        self.deferring = False


_state = _State()


def _handle(signum, _frame) -> None:
    if _state.raised:
        say(f"bake: {signal.Signals(signum).name} received; still cleaning up, please wait")
        return
    if _state.shield_depth or _state.deferring or sys.exc_info()[1] is not None:
        _state.pending = signum
        if _state.deferring:
            say(f"bake: {signal.Signals(signum).name} received; releasing first, then stopping")
        return
    _state.raised, _state.signum = True, signum
    raise Interrupted(signum)


@contextmanager
def interruptible():
    """Turn SIGINT/SIGTERM into `Interrupted` for the block (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _state
    saved_state = _state
    _state = _State()
    saved = {s: signal.signal(s, _handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        _state = saved_state


@contextmanager
def shielded():
    """Hold signals for the block. A signal that arrived meanwhile is raised by the next
    `check()`: the caller first puts what the block created under its own cleanup."""
    _state.shield_depth += 1
    try:
        yield
    finally:
        _state.shield_depth -= 1
        if not _state.shield_depth and _state.pending is not None and not _state.raised:
            _state.raised, _state.signum, _state.pending = True, _state.pending, None


def defer() -> None:
    """From now on a signal waits for the next `check()`: releasing has begun."""
    _state.deferring = True


def resume() -> None:
    """Signals raise where the bake is again (a new step after the teardown)."""
    _state.deferring = False


def interrupted() -> bool:
    """True once a signal has been turned into `Interrupted` (cleanup is under way)."""
    return _state.raised


def check() -> None:
    """Raise again a signal that some library swallowed (Invoke's runner forwards Ctrl-C to the
    remote command and keeps waiting): the bake stops at its next step at the latest."""
    if not _state.raised and _state.pending is not None and not _state.shield_depth:
        _state.raised, _state.signum, _state.pending = True, _state.pending, None
    if _state.raised and _state.signum is not None:
        raise Interrupted(_state.signum)
