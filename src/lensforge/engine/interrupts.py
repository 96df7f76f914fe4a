"""Interrupt-safe runs: Ctrl-C / SIGTERM handling, and deterministic fault injection for its tests.

A Ctrl-C (SIGINT) or SIGTERM may arrive at any moment. Python raises KeyboardInterrupt wherever
the main thread happens to be, which is harmless in most places but not in three:

* inside a checkpoint write (the exception tears torch.save's zip writer apart, and the writer's
  clean-up raises a second exception that replaces the KeyboardInterrupt: a traceback, exit 1);
* inside a state change that must be all-or-nothing (an optimiser step and the position counter
  that says it was done; an epoch's metrics row and the position that says it was recorded);
* inside the clean-up that follows the first Ctrl-C (saving last.pt, printing the one line).

Production API:

    with interrupts.catch():       # for the duration of a run: SIGINT and SIGTERM both raise
        ...                        # KeyboardInterrupt; the *first* one only. Later ones are held,
                                   # so the clean-up after the first one (save last.pt, print one
                                   # line) runs undisturbed. Nested catch() blocks share one state.
    with interrupts.deferred():    # a signal arriving inside is held and delivered when the block
        ...                        # has finished normally (inside catch(): KeyboardInterrupt at the
                                   # block's end; outside: the signal's own disposition, re-raised).
    interrupts.point("area:event") # an instrumentation point: does nothing unless a test armed it.
    interrupts.stop_raising()      # inside catch(): from now on signals are only held (a program's
                                   # last moments, where a KeyboardInterrupt would be a traceback).
    raise interrupts.Interrupted(msg)  # "stopped, position saved": the CLI prints msg, exit 130.

Points are named "area:event". Call `point` wherever an interrupt could land and leave something
to check: between state changes, inside loops that take a while, before and after writing
outputs. In place: fit:start, fit:step (inside a step: held until it is done), fit:after-step,
fit:epoch-end (steps done, evaluation not), fit:evaluate, fit:evaluated, fit:commit (inside the
epoch's commit), fit:epoch-done, fit:saving-position (after a first Ctrl-C), fit:end,
checkpoint:write (inside torch.save's writes), cli:done (after the command's work); the lifecycle's
run:before-fit and run:before-report.

A held signal waits for the end of its block: one training step (the first step under
torch.compile compiles for 10-25 s), one epoch's commit, one checkpoint write.

Test API: `armed(at=None, nth=1, sig=SIGINT)` makes the nth time point `at` is reached (or the nth
point overall when `at` is None) send a real `sig` to this process (`signal.raise_signal`, so the
handlers above are exercised exactly as for a key press, and the test depends on no timing).
`recording()` yields the list of point names reached, e.g. to pick fuzzing targets from.
Only the main thread receives signals, so everything here acts in the main thread only; elsewhere
`catch` and `deferred` do nothing.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Guard:
    """State of the outermost catch(): installed handlers, deferral depth, held signal."""

    def __init__(self):
        self.depth = 0           # catch() nesting
        self.deferring = 0       # deferred() nesting inside it
        self.raised = False      # a KeyboardInterrupt was already raised for a signal: hold later ones
        self.held: int | None = None
        self.previous: dict[int, object] = {}

    def on_signal(self, signum, frame):
        if self.deferring or self.raised:
            self.held = self.held or signum
            return
        self.raised = True
        raise KeyboardInterrupt


_guard: _Guard | None = None


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _settable(signum: int) -> bool:
    """Whether Python may replace this signal's handler (not ignored, not set from C code)."""
    current = signal.getsignal(signum)
    return current is not None and current != signal.SIG_IGN


class Interrupted(Exception):
    """Raised after Ctrl-C/SIGTERM once last.pt holds the exact position to resume from; its
    message is the one line to show (where it stopped, where it saved, how to continue)."""


@contextlib.contextmanager
def catch(ignore_after: bool = False) -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt inside the block, once; see the module docstring.

    `ignore_after`: when the outermost block ends, leave both signals ignored instead of putting
    the previous handlers back. For a program's main function only: a Ctrl-C that lands while the
    interpreter shuts down (atexit callbacks, torch's library finalizers) otherwise prints an
    "Exception ignored ... KeyboardInterrupt" traceback after the program's last line.
    """
    global _guard
    if not _main_thread():
        yield
        return
    if _guard is not None:
        _guard.depth += 1
        try:
            yield
        finally:
            _guard.depth -= 1
        return
    guard = _Guard()
    guard.depth = 1
    # Previous handlers are read before anything is installed and put back in `finally` even if a
    # signal lands half-way through installing (restoring one never replaced is harmless).
    guard.previous = {s: signal.getsignal(s) for s in SIGNALS if _settable(s)}
    _guard = guard
    try:
        for s in guard.previous:
            signal.signal(s, guard.on_signal)
        yield
    finally:
        # A signal held after the KeyboardInterrupt was raised is dropped: the run is already stopping.
        for s, handler in guard.previous.items():
            signal.signal(s, signal.SIG_IGN if ignore_after else handler)
        _guard = None


def stop_raising() -> None:
    """From now until the outermost catch() ends, signals are only held, never raised: for the
    last moments of a program (printing its final line), where an exception would be a traceback."""
    if _guard is not None:
        _guard.raised = True


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while the block runs; deliver a held one after it finished normally.

    If the block raises, that exception wins and a held signal is dropped (the caller is stopping
    anyway, and the exception says why: e.g. the disk is full).
    """
    if not _main_thread():
        yield
        return
    if _guard is not None:
        _guard.deferring += 1
        try:
            yield
        except BaseException:
            _guard.deferring -= 1
            if not _guard.deferring:
                _guard.held = None
            raise
        _guard.deferring -= 1
        if not _guard.deferring and _guard.held is not None and not _guard.raised:
            _guard.held, _guard.raised = None, True
            raise KeyboardInterrupt
        return
    # Outside catch(): hold the signals with a temporary handler, then re-raise the held one under
    # the handler that was there before (KeyboardInterrupt for SIGINT, termination for a default
    # SIGTERM, or whatever the embedding program installed).
    held: list[int] = []
    previous = {s: signal.getsignal(s) for s in SIGNALS if _settable(s)}
    ok = False
    try:
        for s in previous:
            signal.signal(s, lambda signum, frame: held.append(signum))
        yield
        ok = True
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if ok and held:
        signal.raise_signal(held[0])


# ----------------------------------------------------------------------------- instrumentation

class _Trigger:
    def __init__(self, at: str | None, nth: int, sig: int):
        if nth < 1:
            raise ValueError("nth counts from 1")
        self.at, self.nth, self.sig, self.count, self.fired = at, nth, sig, 0, False


_triggers: list[_Trigger] = []
_recorders: list[list[str]] = []


def point(name: str) -> None:
    """An instrumentation point: nothing happens unless a test armed it (see the module docstring)."""
    if not _triggers and not _recorders:
        return
    for seen in _recorders:
        seen.append(name)
    for t in _triggers:
        if not t.fired and (t.at is None or t.at == name):
            t.count += 1
            if t.count == t.nth:
                t.fired = True
                signal.raise_signal(t.sig)  # handlers run before this returns: deterministic


@contextlib.contextmanager
def armed(at: str | None = None, nth: int = 1, sig: int = signal.SIGINT) -> Iterator[_Trigger]:
    """Inside the block, the nth arrival at point `at` (any point if None) sends `sig` to this
    process. The yielded trigger's `fired` says whether it went off."""
    trigger = _Trigger(at, nth, sig)
    _triggers.append(trigger)
    try:
        yield trigger
    finally:
        _triggers.remove(trigger)


@contextlib.contextmanager
def recording() -> Iterator[list[str]]:
    """Yield a list that collects the name of every point reached inside the block."""
    seen: list[str] = []
    _recorders.append(seen)
    try:
        yield seen
    finally:
        _recorders.remove(seen)
