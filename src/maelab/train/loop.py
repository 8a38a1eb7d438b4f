"""The one training loop shared by pre-training, fine-tuning and linear probing.

A command supplies a ``step_fn`` that turns a batch into a :class:`StepOutput`; the loop
owns everything else: lr schedule, gradient accumulation, autocast, clipping, the
non-finite check, progress bar, JSONL log, epoch callbacks and checkpoints. It can stop
between optimizer steps (a signal, see :mod:`maelab.train.signals`) and continue there
exactly (:mod:`maelab.train.state`, :mod:`maelab.train.loader`). Under torchrun it runs
data-parallel (:mod:`maelab.train.distributed`): the step function gets the DDP wrapper,
metrics are averaged over ranks, and only rank 0 logs and saves.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from maelab.train.config import LoopConfig, OptimConfig
from maelab.train.distributed import all_reduce_mean, any_rank, maybe_no_sync, wrap_ddp
from maelab.train.environment import Environment
from maelab.train.loader import epoch_seed, seed_epoch
from maelab.train.nonfinite import NonfiniteGuard, TrainingDiverged
from maelab.train.optim import lr_at, set_lr, total_grad_norm
from maelab.train.rundir import JsonlLog
from maelab.train.signals import StopRequest, TrainingInterrupted
from maelab.train.state import EpochSums, LoopState, Progress, capture_rng, restore_rng

logger = logging.getLogger(__name__)


@dataclass
class StepOutput:
    """What a step function returns: the loss to minimize and extra scalars to log."""

    loss: torch.Tensor
    batch_size: int
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


StepFn = Callable[[nn.Module, Any, torch.Generator], StepOutput]
"""``step_fn(model, batch, mask_generator)``: one batch's loss (the model may be the DDP wrapper)."""
EpochHook = Callable[[int, dict[str, float], JsonlLog], dict[str, float]]
"""``on_epoch_end(epoch, record, log)``: evaluate, draw pictures (announced through ``log``); returns
more fields for the epoch's record."""


@dataclass
class TrainLoop:
    """One run of the shared loop; build it, then call :meth:`run`."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    step_fn: StepFn
    """Gets ``model``, or its DDP wrapper on several ranks, compiled with ``loop.compile`` (what it gets must run
    the forward; other attributes reach the wrapped module)."""
    make_loader: Callable[[int, int], Iterable]
    """``make_loader(epoch, start)``: the batches of one epoch from batch ``start`` on."""
    steps_per_epoch: int
    loop: LoopConfig
    optim: OptimConfig
    env: Environment
    log: JsonlLog
    effective_batch: int
    on_epoch_end: EpochHook | None = None
    save: Callable[[Progress, LoopState], None] | None = None
    """Writes a checkpoint (on rank 0 only); called at epoch ends and, when ``progress.iter > 0``, inside an epoch."""
    desc: str = "train"
    trainable: list[nn.Parameter] = field(default_factory=list)
    stop: StopRequest | None = None
    """Polled after every optimizer step: when set, the loop saves and raises TrainingInterrupted."""
    dataset_size: int = 0
    """Recorded in checkpoints: a resume onto a different training set could not be exact."""
    stream_workers: int | None = None
    """Recorded in checkpoints for streamed data (:class:`~maelab.train.loader.TrainData`)."""
    sharded: bool = False
    """The model is FSDP-sharded: its forward and its state dict are collectives, so ``on_epoch_end``
    and ``save`` run on every rank (they write on rank 0 only)."""

    def __post_init__(self) -> None:
        assert self.loop.epochs is not None or self.loop.steps is not None, \
            "resolve the command's default schedule (epochs or steps) before building the loop"
        if not self.trainable:
            self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        if self.env.world_size > 1 and self.loop.on_nonfinite == "skip":
            # A rank that skips its backward would leave the others waiting in DDP's gradient all-reduce.
            raise ValueError("--on-nonfinite skip works in one process only; under torchrun use --on-nonfinite stop")
        # Checkpoints use the plain model; the step function gets the DDP wrapper, compiled with --compile (only
        # the step: evaluations stay eager, and the state dict keeps the plain module's keys).
        self.net = wrap_ddp(self.model, self.env.world_size, self.env.device)
        self.step_net = torch.compile(self.net) if self.loop.compile else self.net
        self.base_lr = self.optim.absolute_lr(self.effective_batch)
        self.nonfinite_skipped = 0
        # fp16 gradients underflow without loss scaling; bf16 and fp32 need none (disabled: every call passes through).
        fp16 = self.env.amp_dtype == torch.float16
        if fp16 and self.sharded:
            raise ValueError("--amp fp16 does not work with --fsdp (its gradient scaler is not shard-aware); "
                             "use --amp bf16 or --amp off")
        self.scaler = torch.amp.GradScaler(self.env.device.type, enabled=fp16)
        # Optimizer steps per epoch: a last accumulation cycle cut short by the epoch's end still steps.
        self.optimizer_steps_per_epoch = math.ceil(self.steps_per_epoch / self.loop.accum_iter)
        self.epochs = self.loop.schedule_epochs(self.optimizer_steps_per_epoch)
        # Steps the run took before this invocation's first epoch beyond that many epochs of this length:
        # nonzero only when it continues with another epoch length (_continue_resized).
        self.step_offset = 0
        if self.loop.steps is None:  # in epochs, from 0 to epochs
            self.warmup = self.optim.warmup(self.loop.epochs, 1.0, step_schedule=False)
        else:  # in optimizer steps: the first step runs at position 0, the last at steps - 1
            self.warmup = self.optim.warmup(self.loop.steps - 1, self.optimizer_steps_per_epoch, step_schedule=True)

    def _write(self, record: dict[str, Any]) -> None:
        if self.env.is_main:
            self.log.write(record)

    def _stopping(self, agree_now: bool) -> bool:
        """Whether to stop; on several ranks they agree (a collective) only where ``agree_now`` is true on all."""
        requested = self.stop is not None and self.stop.requested
        if self.env.world_size == 1:
            return requested
        return agree_now and any_rank(requested, self.env.device)

    def _lr(self, epoch: int, it: int, step: int) -> float:
        """The lr of the optimizer step that batch ``it`` of ``epoch`` belongs to (``step`` steps done before it)."""
        if self.loop.steps is None:
            return lr_at(epoch + it / self.steps_per_epoch, self.base_lr, self.optim.min_lr, self.warmup,
                         self.loop.epochs)
        # The schedule ends exactly at the last step: it runs at min_lr.
        return lr_at(step, self.base_lr, self.optim.min_lr, self.warmup, self.loop.steps - 1)

    def _batches(self, epoch: int) -> int:
        """Batches of ``epoch``: all of them, except in the last epoch of a schedule in steps, which ends early."""
        if self.loop.steps is None:
            return self.steps_per_epoch
        left = self.loop.steps - epoch * self.optimizer_steps_per_epoch - self.step_offset  # steps still to run
        return min(self.steps_per_epoch, left * self.loop.accum_iter)

    def run(self, progress: Progress, resume: LoopState | None = None) -> list[dict[str, float]]:
        """Train from ``progress`` to the schedule's end (``loop.epochs``, or the epoch holding step
        ``loop.steps``); ``resume`` is the checkpointed loop state (required when ``progress.iter > 0``). Returns
        the epoch records."""
        history = []
        if resume is not None and not progress.iter:
            self._continue_resized(progress, resume)
        length = (f"{self.epochs} epochs" if self.loop.steps is None else
                  f"{self.loop.steps} optimizer steps ({self.loop.steps / self.optimizer_steps_per_epoch:.2f} epochs)")
        logger.info(
            "training %s: %s x %d steps, effective batch %d (%d per device x %d devices x %d accumulation), "
            "lr %.3g, device %s%s%s", self.desc, length, self.steps_per_epoch, self.effective_batch,
            self.effective_batch // (self.env.world_size * self.loop.accum_iter), self.env.world_size,
            self.loop.accum_iter, self.base_lr, self.env.device,
            f", autocast {self.env.amp_dtype}" if self.env.amp_dtype else "",
            ", compiled (the first steps wait for the compilation)" if self.loop.compile else "",
        )
        total = self.loop.epochs if self.loop.steps is None else self.loop.steps - 1
        if 0 < total <= self.warmup:
            logger.warning(
                "the warmup (%g %s) covers the whole schedule: the lr only rises and never decays; use a "
                "shorter warmup (e.g. --warmup-fraction 0.1) for short runs",
                self.warmup, "epochs" if self.loop.steps is None else "optimizer steps",
            )
        if resume is not None:
            self.nonfinite_skipped = resume.nonfinite_skipped
            if resume.scaler and self.scaler.is_enabled():
                self.scaler.load_state_dict(resume.scaler)
        end = self.epochs
        if self.loop.stop_after is not None:
            end = min(end, progress.epoch + self.loop.stop_after)
        while progress.epoch < end:
            record = self._epoch(progress, resume if progress.iter else None)
            progress.epoch, progress.iter = progress.epoch + 1, 0
            if self.on_epoch_end is not None and (self.env.is_main or self.sharded):
                record.update(self.on_epoch_end(progress.epoch - 1, record, self.log))
            self._write(record)
            history.append(record)
            stopping = self._stopping(True)
            due = stopping or progress.epoch == end or progress.epoch % self.loop.save_every == 0
            if self.save is not None and (self.env.is_main or self.sharded) and due:
                self.save(progress, self._state(None, None))
            if stopping and progress.epoch < end:
                raise self._interrupted(progress)
        return history

    def _continue_resized(self, progress: Progress, saved: LoopState) -> None:
        """Resuming at an epoch end saved with another epoch length (another world size: the per-device batch
        stays, so the effective batch changes): say so in the log, and let a schedule in steps count the steps
        the earlier epochs took, so that it still ends at ``loop.steps``. A schedule in epochs needs nothing: it
        runs on epoch fractions and ends at ``loop.epochs`` whatever an epoch's length."""
        if saved.world_size == self.env.world_size and saved.steps_per_epoch in (0, self.steps_per_epoch):
            return
        per_epoch = self.optimizer_steps_per_epoch
        if self.loop.steps is not None:
            self.step_offset = progress.step - progress.epoch * per_epoch
            self.epochs = progress.epoch + math.ceil((self.loop.steps - progress.step) / per_epoch)
        saved_batch = self.effective_batch // self.env.world_size * saved.world_size
        saved_steps = math.ceil(saved.steps_per_epoch / self.loop.accum_iter) if saved.steps_per_epoch else None
        lr = ("" if self.optim.lr is not None else  # --blr scales the peak lr with the effective batch
              f", the peak lr {self.base_lr:.3g} (was {self.optim.absolute_lr(saved_batch):.3g})")
        end = f"the end of epoch {self.epochs}" if self.loop.steps is None else f"optimizer step {self.loop.steps}"
        logger.warning(
            "continuing on %d process(es) a run saved by %d at the end of epoch %d: the effective batch is %d "
            "(was %d)%s, so an epoch is %d optimizer steps (was %s); the lr schedule still ends at %s",
            self.env.world_size, saved.world_size, progress.epoch, self.effective_batch, saved_batch, lr,
            per_epoch, saved_steps or "not recorded", end,
        )
        self._write(dict(event="resize", epoch=progress.epoch, step=progress.step, world_size=self.env.world_size,
                         saved_world_size=saved.world_size, effective_batch=self.effective_batch,
                         saved_effective_batch=saved_batch, steps_per_epoch=per_epoch,
                         saved_steps_per_epoch=saved_steps))

    def _state(self, generator: torch.Generator | None, sums: EpochSums | None) -> LoopState:
        rng = capture_rng(generator) if generator is not None else None
        return LoopState(rng=rng, sums=sums, nonfinite_skipped=self.nonfinite_skipped, dataset_size=self.dataset_size,
                         world_size=self.env.world_size, steps_per_epoch=self.steps_per_epoch,
                         stream_workers=self.stream_workers,
                         scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None)

    def _interrupted(self, progress: Progress) -> TrainingInterrupted:
        assert self.stop is not None
        # On several ranks, one that got no signal itself stops because another did; it reports SIGTERM.
        signum = self.stop.signum if self.stop.signum is not None else signal.SIGTERM
        saved = ("a checkpoint was saved" if self.save is not None
                 else "nothing was saved (this command keeps no checkpoint)")
        return TrainingInterrupted(
            signum, f"stopped by signal {signum} after optimizer step {progress.step} "
            f"(epoch {progress.epoch + 1}, {progress.iter} batches into it); {saved}",
        )

    def _epoch(self, progress: Progress, resume: LoopState | None) -> dict[str, float]:
        epoch, accum, start_iter = progress.epoch, self.loop.accum_iter, progress.iter
        generator = torch.Generator(self.env.device).manual_seed(epoch_seed(self.loop.seed, epoch, "mask"))
        if resume is None:
            assert start_iter == 0, "a mid-epoch start needs the checkpointed loop state"
            seed_epoch(self.loop.seed, epoch)
            sums = EpochSums.zeros(self.env.device)
        else:
            assert resume.rng is not None and resume.sums is not None, "a mid-epoch checkpoint holds rng and sums"
            restore_rng(resume.rng, generator)
            sums = resume.sums
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        nonfinite = NonfiniteGuard(self.loop.on_nonfinite, self.env.device)
        window_seen = seen_here = 0
        start = window_start = time.perf_counter()
        lr = self._lr(epoch, start_iter, progress.step)
        batches = self._batches(epoch)
        bar = tqdm(total=batches, initial=start_iter, desc=f"{self.desc} {epoch + 1}/{self.epochs}",
                   disable=None if self.env.is_main else True, dynamic_ncols=True, leave=False)
        it, grad_norm = start_iter - 1, None
        loader = self.make_loader(epoch, start_iter)
        for it, batch in enumerate(loader, start=start_iter):
            if it % accum == 0:
                lr = self._lr(epoch, it, progress.step)
                set_lr(self.optimizer, lr)
            last = it + 1 == batches
            stepped = (it + 1) % accum == 0 or last
            # DDP all-reduces the gradients on the cycle's last micro-batch only.
            with maybe_no_sync(self.net, sync=stepped):
                with torch.autocast(self.env.device.type, dtype=self.env.amp_dtype or torch.float32,
                                    enabled=self.env.amp_dtype is not None):
                    out = self.step_fn(self.step_net, batch, generator)
                loss = out.loss.detach().float()
                if nonfinite.check(loss, progress.step + 1):
                    self.scaler.scale(out.loss / accum).backward()
                    sums.loss += loss
                    sums.batches += 1
                    for key, value in out.metrics.items():
                        sums.metrics[key] = sums.metrics.get(key, 0) + value.detach().float()
            if stepped:
                # The norm is measured at log steps only (a pass over the grads) unless clipping computes it anyway.
                norm = self._optimizer_step(nonfinite, progress.step + 1, epoch, it, bar,
                                            want_norm=(it + 1) % self.loop.log_every == 0)
                grad_norm = norm if norm is not None else grad_norm
                progress.step += 1
            sums.seen += out.batch_size
            window_seen += out.batch_size
            seen_here += out.batch_size
            bar.update(1)
            if (it + 1) % self.loop.log_every == 0:
                nonfinite.raise_if_found(bar)
                loss = all_reduce_mean(loss, self.env.world_size)
                now = time.perf_counter()
                rate = window_seen * self.env.world_size / max(now - window_start, 1e-9)
                window_start, window_seen = now, 0
                record = dict(event="step", epoch=epoch, iter=it + 1, step=progress.step,
                              loss=float(loss), lr=lr, img_per_s=rate)
                if grad_norm is not None:  # None when a log step falls between accumulation steps
                    record["grad_norm"], grad_norm = float(grad_norm), None
                self._write(record)
                remaining = (batches - it - 1) + sum(self._batches(e) for e in range(epoch + 1, self.epochs))
                bar.set_postfix(loss=f"{float(loss):.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}",
                                eta=_fmt_time(remaining * out.batch_size / max(rate, 1e-9)))
            if stepped and not last:
                self._maybe_save_mid_epoch(progress, it + 1, generator, sums, nonfinite, bar,
                                           agree_now=(it + 1) % self.loop.log_every == 0)
            if last and batches < self.steps_per_epoch:
                # A schedule in steps ends its last epoch before the data does; stop the loader's workers now.
                getattr(loader, "close", lambda: None)()
                break
        bar.close()
        nonfinite.raise_if_found(bar)
        if it < start_iter:
            raise ValueError("the training data is empty: no batch was produced; check the dataset and --batch-size")
        elapsed = time.perf_counter() - start
        n, mean = max(sums.batches, 1), self._rank_mean(sums)
        record = dict(event="epoch", epoch=epoch, step=progress.step, loss=float(mean.loss) / n, lr=lr,
                      img_per_s=seen_here * self.env.world_size / max(elapsed, 1e-9),
                      epoch_time_s=elapsed)
        record.update({k: float(v) / n for k, v in mean.metrics.items()})
        logger.info("%s epoch %d/%d: loss %.4f, %.0f img/s, %.1fs", self.desc, epoch + 1, self.epochs,
                    record["loss"], record["img_per_s"], elapsed)
        return record

    def _optimizer_step(
        self, nonfinite: NonfiniteGuard, step: int, epoch: int, it: int, bar, want_norm: bool,
    ) -> torch.Tensor | None:
        """Apply (or skip) one optimizer step; returns the gradient norm when clipping or ``want_norm``."""
        if nonfinite.cycle_bad:
            # The bad micro-batch never reached backward; drop the rest of the cycle's gradients too.
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_skipped += 1
            logger.warning("skipping optimizer step %d (epoch %d, iteration %d): loss is %s; %d skipped so far "
                           "(limit --max-nonfinite %d)", step, epoch + 1, it + 1, nonfinite.bad_loss,
                           self.nonfinite_skipped, self.loop.max_nonfinite)
            self._write(dict(event="nonfinite", epoch=epoch, iter=it + 1, step=step, loss=nonfinite.bad_loss,
                                skipped=self.nonfinite_skipped))
            nonfinite.cycle_bad = False
            if self.nonfinite_skipped > self.loop.max_nonfinite:
                bar.close()
                raise TrainingDiverged(
                    f"{self.nonfinite_skipped} optimizer steps had a non-finite loss (the last at step {step}), "
                    f"more than --max-nonfinite {self.loop.max_nonfinite}; lower the learning rate (--blr), "
                    "enable --clip-grad, or check the input data"
                )
            return None
        norm = None
        self.scaler.unscale_(self.optimizer)  # clip and measure the true gradients (a no-op without fp16)
        if self.optim.clip_grad is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.optim.clip_grad)
        elif want_norm:
            norm = total_grad_norm(self.trainable)
        self.scaler.step(self.optimizer)  # skipped by the scaler when a gradient overflowed fp16
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.sharded and norm is not None:
            from torch.distributed.tensor import DTensor  # loaded with FSDP: never for an unsharded run

            if isinstance(norm, DTensor):  # each rank holds its shards' part of the norm
                norm = norm.full_tensor()
        return norm

    def _rank_mean(self, sums: EpochSums) -> EpochSums:
        """``sums`` with loss and metrics averaged over ranks (a collective; itself on one rank)."""
        world = self.env.world_size
        if world == 1:
            return sums
        return EpochSums(loss=all_reduce_mean(sums.loss, world), batches=sums.batches, seen=sums.seen,
                         metrics={k: all_reduce_mean(v, world) for k, v in sums.metrics.items()})

    def _maybe_save_mid_epoch(
        self, progress: Progress, done: int, generator, sums: EpochSums, nonfinite: NonfiniteGuard, bar,
        agree_now: bool,
    ) -> None:
        stopping = self._stopping(agree_now)
        every = self.loop.save_every_steps
        here = Progress(progress.epoch, progress.step, done)
        if self.save is not None and (stopping or (every is not None and progress.step % every == 0)):
            nonfinite.raise_if_found(bar)  # never save weights a deferred check would reject
            # Every rank resumes from these sums: the rank mean so far, so the epoch's mean stays exact.
            state = self._state(generator, self._rank_mean(sums))
            if self.env.is_main or self.sharded:
                self.save(here, state)
        if stopping:
            bar.close()
            raise self._interrupted(here)


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
