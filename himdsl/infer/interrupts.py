"""Ctrl-C during a fit: the step in flight finishes, a checkpoint is saved, then the
fit stops. A step cut in half would leave the ratio and q out of step with each
other, and a checkpoint of that state would not resume faithfully.

    with deferred_interrupts() as flag:
        while training:
            step()
            if flag.raised:
                save(); raise FitInterrupted(step)

A second Ctrl-C interrupts at once (the last checkpoint on disk stays good).
"""
from __future__ import annotations

import contextlib
import signal
import threading


class FitInterrupted(KeyboardInterrupt):
    """The user stopped the fit; `step` is where, `checkpoint` what was saved (or None)."""

    def __init__(self, step: int, checkpoint: str | None):
        super().__init__(f"interrupted at step {step}")
        self.step, self.checkpoint = step, checkpoint


class InterruptFlag:
    raised: bool = False


@contextlib.contextmanager
def deferred_interrupts():
    """Within the block a first SIGINT only sets `flag.raised`; outside the main
    thread (where signals cannot be handled) interrupts are left as they are."""
    flag = InterruptFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.raised:
            raise KeyboardInterrupt
        flag.raised = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
