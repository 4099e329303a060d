"""Where a command's time went: named phases, timed with `time.perf_counter`.

The steps that take time say so with `timed` (drawing the demo, extracting
features, fitting, evaluating, ...); a command that wants the account runs
them inside `Phases.measure` and prints `Phases.line`:
`time: extract 95 s, train 31 s, evaluate 12 s; total 144 s`. Outside such
a block `timed` costs a clock read and records nothing.

A phase inside another counts only in the inner one: each second is counted
once.
"""

from __future__ import annotations

import contextlib
import functools
from time import perf_counter

_measuring: list[Phases] = []  # the account `timed` adds to, innermost last


class Phases:
    """Seconds spent in each named phase, in the order the phases came."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.started = perf_counter()
        self._open: list[float] = []  # seconds of the open phases' inner phases

    @classmethod
    @contextlib.contextmanager
    def measure(cls):
        """A new account that `timed` phases add to while the block runs."""
        phases = cls()
        _measuring.append(phases)
        try:
            yield phases
        finally:
            _measuring.remove(phases)

    @contextlib.contextmanager
    def phase(self, name: str):
        """Count the block's seconds, less those of phases inside it, to `name`."""
        self.seconds.setdefault(name, 0.0)
        self._open.append(0.0)
        started = perf_counter()
        try:
            yield
        finally:
            spent = perf_counter() - started
            inner = self._open.pop()
            self.seconds[name] += spent - inner
            if self._open:
                self._open[-1] += spent

    def line(self, total: float | None = None) -> str:
        """`time: draw 3 s, extract 95 s; total 99 s` (whole seconds).

        Args:
            total: The seconds to call the total; default since the account
                began.
        """
        if total is None:
            total = perf_counter() - self.started
        parts = [f"{name} {seconds:.0f} s" for name, seconds in self.seconds.items()]
        return (
            "time: "
            + "".join(f"{p}, " for p in parts[:-1])
            + (f"{parts[-1]}; " if parts else "")
            + f"total {total:.0f} s"
        )


def timed(name: str):
    """Decorate a function whose calls are the phase `name` of `Phases.measure`."""

    def decorate(function):
        @functools.wraps(function)
        def run(*args, **kwargs):
            if not _measuring:
                return function(*args, **kwargs)
            with _measuring[-1].phase(name):
                return function(*args, **kwargs)

        return run

    return decorate
