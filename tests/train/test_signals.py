"""Graceful stop: the first signal sets a flag, a second Ctrl-C stops at once, handlers are restored."""

import os
import signal

import pytest

from maelab.train.signals import TrainingInterrupted, graceful_stop


def test_first_signal_requests_a_stop_second_ctrl_c_interrupts():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with graceful_stop() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_sigterm_sets_the_flag_and_exit_status_follows_the_shell_convention():
    with graceful_stop() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
    assert TrainingInterrupted(signal.SIGTERM, "x").exit_status == 143
    assert TrainingInterrupted(signal.SIGINT, "x").exit_status == 130
