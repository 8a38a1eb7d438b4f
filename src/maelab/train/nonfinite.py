"""The loop's non-finite loss check: stop at the first NaN/inf loss (default), or skip such steps up to a limit."""

from __future__ import annotations

import math

import torch


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class NonfiniteGuard:
    """Finds a NaN/inf loss at the step it happens.

    "skip" (and any CPU run) checks every micro-batch before its backward pass; "stop" on
    an accelerator records the first bad step on the device and raises at the next log step,
    avoiding a host sync per step.
    """

    def __init__(self, mode: str, device: torch.device) -> None:
        self.mode, self.sync = mode, mode == "skip" or device.type == "cpu"
        self.cycle_bad = False
        self.bad_loss = math.nan
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)  # step index, -1 = none
        self.first_loss = torch.zeros((), device=device)

    def check(self, loss: torch.Tensor, step: int) -> bool:
        """True when ``loss`` may be back-propagated."""
        if not self.sync:
            bad = ~torch.isfinite(loss) & (self.first_bad < 0)
            self.first_bad = torch.where(bad, step, self.first_bad)
            self.first_loss = torch.where(bad, loss, self.first_loss)
            return True
        value = float(loss)
        if math.isfinite(value):
            return True
        if self.mode == "stop":
            raise TrainingDiverged(_diverged_message(step, value))
        self.cycle_bad, self.bad_loss = True, value
        return False

    def raise_if_found(self, bar) -> None:
        if not self.sync and int(self.first_bad) >= 0:
            bar.close()
            raise TrainingDiverged(_diverged_message(int(self.first_bad), float(self.first_loss)))


def _diverged_message(step: int, loss: float) -> str:
    return (f"loss is {loss} at optimizer step {step}; stopping (the last checkpoint is intact). Lower the "
            "learning rate (--blr), enable --clip-grad, check the input data, or pass --on-nonfinite skip")
