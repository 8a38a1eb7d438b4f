"""Graceful stop: SIGTERM / SIGINT ask the loop to finish its optimizer step, save and stop.

Cluster schedulers send SIGTERM some time before they kill a job; a terminal sends SIGINT
on Ctrl-C. The first signal only sets a flag that the loop polls between optimizer steps;
a second Ctrl-C stops at once (the last saved checkpoint stays intact).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(Exception):
    """The run stopped on a signal after saving; ``exit_status`` is the shell convention 128 + signal."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class StopRequest:
    """A flag set by a stop signal (or by code, e.g. tests) and polled by the loop."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def request(self, signum: int = signal.SIGTERM) -> None:
        self.signum = signum


@contextmanager
def graceful_stop() -> Iterator[StopRequest]:
    """Route SIGTERM / SIGINT to a :class:`StopRequest` for the duration of the block.

    Outside the main thread (where Python cannot install handlers) the request is returned
    but never set by signals.
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, frame) -> None:
        if stop.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.request(signum)
        logger.warning("received %s: finishing the current optimizer step, saving a checkpoint, then stopping "
                       "(Ctrl-C again to stop at once)", signal.Signals(signum).name)

    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, handle)
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
