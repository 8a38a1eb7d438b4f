"""Classification metrics and the outputs every evaluation command writes.

Top-k accuracy uses k = min(k, num_classes), so on a 4-class dataset "top5" is top-4 (100%).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

from maelab.checkpoint import CheckpointMeta, read_meta, save_checkpoint
from maelab.data.folder import skipped_files_report, skipped_files_summary
from maelab.evaluate.data import eval_loader
from maelab.train.distributed import agree
from maelab.train.fsdp import is_sharded, load_model_state, plain_state_dict
from maelab.train.resume import save_point
from maelab.train.rundir import JsonlLog, write_json
from maelab.train.spine import RunHooks
from maelab.train.state import LoopState, Progress

logger = logging.getLogger(__name__)

BEST = "checkpoint-best"


@dataclass(frozen=True)
class EvalResult:
    """Accuracies in percent, mean cross-entropy (NaN when not defined, e.g. kNN) and the
    (num_classes, num_classes) confusion matrix, rows = true class, columns = prediction."""

    top1: float
    top5: float
    loss: float
    confusion: torch.Tensor
    count: int

    def summary(self, prefix: str = "test_") -> dict[str, float]:
        out = {f"{prefix}top1": self.top1, f"{prefix}top5": self.top5}
        if not math.isnan(self.loss):
            out[f"{prefix}loss"] = self.loss
        return out


def result_from_scores(scores: torch.Tensor, labels: torch.Tensor, loss_sum: float = math.nan) -> EvalResult:
    """Metrics of class scores (N, C) against labels (N,)."""
    num_classes = scores.shape[1]
    k = min(5, num_classes)
    top = scores.topk(k, dim=1).indices  # (N, k)
    hits = top == labels.unsqueeze(1)  # (N, k)
    n = labels.shape[0]
    pairs = labels * num_classes + top[:, 0]  # (N,) flat (true, predicted) index
    confusion = torch.bincount(pairs, minlength=num_classes * num_classes).view(num_classes, num_classes)  # (C, C)
    return EvalResult(
        top1=100.0 * float(hits[:, 0].float().mean()), top5=100.0 * float(hits.any(1).float().mean()),
        loss=loss_sum / max(n, 1), confusion=confusion.cpu(), count=n,
    )


@torch.no_grad()
def evaluate(
    predict: Callable[[torch.Tensor], torch.Tensor], batches: Iterable, device: torch.device,
) -> EvalResult:
    """Run ``predict`` (inputs -> logits) over ``(inputs, labels)`` batches; the caller sets eval mode."""
    scores, labels, loss_sum = [], [], 0.0
    for inputs, target in batches:
        target = torch.as_tensor(target).to(device)
        logits = predict(inputs.to(device, non_blocking=True)).float()
        loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
        scores.append(logits.cpu())
        labels.append(target.cpu())
    if not scores:
        raise ValueError("the test split is empty; nothing to evaluate")
    return result_from_scores(torch.cat(scores), torch.cat(labels), loss_sum)


def evaluators(model: nn.Module, splits: dict[str, Dataset | None], batch_size: int, device: torch.device,
               num_workers: int = 0) -> dict[str, Callable[[], EvalResult]]:
    """One evaluation of ``model`` per split that exists (a missing validation split is None)."""
    return {name: partial(evaluate, model, eval_loader(data, batch_size, device, num_workers), device)
            for name, data in splits.items() if data is not None}


def save_confusion_matrix(confusion: torch.Tensor, class_names: Sequence[str], path: Path, title: str) -> None:
    """Row-normalized colours (recall per class) with the raw counts written in the cells."""
    counts = confusion.double()
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)  # (C, C) each row sums to 1
    n = counts.shape[0]
    side = min(2.0 + 0.55 * n, 16.0)
    fig = Figure(figsize=(side + 1.2, side), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    names = [str(c) for c in class_names] if len(class_names) == n else [str(i) for i in range(n)]
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


class ClassifierRun:
    """Per-epoch validation and test evaluation, best/last checkpoints, metrics.json and the confusion matrix
    of a trained classifier; its methods plug into :class:`TrainLoop`.

    ``model`` is the whole classifier (what checkpoints hold); ``optimizer`` trains (part of) it.
    ``images``: the datasets the run reads images from; the files they skipped (unreadable, see
    ``--max-bad-fraction``) are reported in each epoch's record and in metrics.json.
    The per-epoch evaluations and the best one so far travel in the resumable checkpoint
    (:meth:`state_dict`), so a resumed run writes the same metrics.json as an uninterrupted one.
    ``eval_every``: evaluate every that many epochs (and at the last, in :meth:`finish`). ``test_at_end``: during
    training only the validation split is evaluated; :meth:`finish` scores the test split once, with the
    checkpoint chosen on validation (the last, without a validation split).
    An FSDP-sharded ``model`` is evaluated and gathered by every rank (collectives); only the
    one with ``write`` writes files and logs.
    """

    def __init__(
        self, run_dir: Path, model: nn.Module, evaluators: dict[str, Callable[[], EvalResult]],
        meta: Callable[[int], CheckpointMeta], class_names: Sequence[str], title: str, extra: dict[str, Any],
        optimizer: torch.optim.Optimizer | None, keep_last: int, write: bool = True,
        images: Sequence[Dataset | None] = (), eval_every: int = 1, test_at_end: bool = False,
    ) -> None:
        assert set(evaluators) in ({"test"}, {"val", "test"}), evaluators.keys()
        self.run_dir, self.model, self.evaluators, self.meta = run_dir, model, evaluators, meta
        self.class_names, self.title, self.extra = tuple(class_names), title, extra
        self.optimizer, self.keep_last, self.write, self.images = optimizer, keep_last, write, tuple(images)
        self.epochs: list[dict[str, float]] = []
        self.best: dict[str, float] | None = None
        self.result: EvalResult | None = None
        self.eval_every, self.test_at_end = eval_every, test_at_end
        self.pending: tuple[int, dict[str, float]] | None = None
        """The last epoch's (epoch, record) when it was not evaluated: :meth:`finish` evaluates it."""

    @property
    def selected_on(self) -> str:
        return "val" if "val" in self.evaluators else "none (no validation split: best is the last epoch)"

    def on_epoch_end(self, epoch: int, record: dict[str, float], log: JsonlLog | None = None) -> dict[str, float]:
        """The loop's epoch hook; a classifier's evaluation writes files of its own, not through ``log``.

        "best" is chosen on the validation split's top-1 (never on test); without one, it is the last epoch.
        """
        if (epoch + 1) % self.eval_every:
            self.pending = (epoch, record)
            return {}
        self.pending = None
        splits = [s for s in self.evaluators if not (self.test_at_end and s == "test")]
        results = self._evaluate(splits)
        self.result = results.get("test", self.result)
        summary = {k: v for split, result in results.items() for k, v in result.summary(f"{split}_").items()}
        row = dict(epoch=epoch, train_loss=record["loss"], **(results["test"].summary("") if "test" in results else {}),
                   **({} if "val" not in results else results["val"].summary("val_")))
        self.epochs.append(row)
        better = "val" not in results or self.best is None or row["val_top1"] > self.best["val_top1"]
        if is_sharded(self.model):
            better = agree(better)  # every rank must join the gather below, or none
        if better:
            self.best = row
            weights = plain_state_dict(self.model)
            if self.write:
                save_checkpoint(self.run_dir / BEST, weights, self.meta(epoch + 1))
        if not self.write:
            return summary
        summary.update(skipped_files_report(*self.images))
        val = (f"val top-1 {row['val_top1']:.2f}% (best {self.best['val_top1']:.2f}% at epoch "
               f"{self.best['epoch'] + 1})" if "val" in results else "")
        test = f"test top-1 {row['top1']:.2f}%, top-5 {row['top5']:.2f}%" if "test" in results else ""
        logger.info("epoch %d: %s", epoch + 1, ", ".join(part for part in (val, test) if part))
        return summary

    def _evaluate(self, splits: Sequence[str]) -> dict[str, EvalResult]:
        # Modes are restored module by module: a probe trains its head inside a frozen, eval-mode encoder.
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        results = {split: self.evaluators[split]() for split in splits}
        for module, mode in modes:
            module.training = mode
        return results

    def _test_chosen(self) -> None:
        """Score the test split once, with the weights of the checkpoint chosen on validation."""
        assert self.best is not None
        load_model_state(self.model, load_file(str(self.run_dir / f"{BEST}.safetensors")))
        self.result = self._evaluate(["test"])["test"]
        # A copy: the best row is also one of self.epochs, whose rows carry validation numbers only.
        self.best = dict(self.best, **self.result.summary(""))
        logger.info("test split scored once, with the checkpoint chosen on %s (epoch %d)", self.selected_on,
                    self.best["epoch"] + 1)

    def state_dict(self) -> dict[str, Any]:
        """The evaluations so far: plain lists, dicts and floats (``torch.load(weights_only=True)`` reads them)."""
        return {"epochs": [dict(row) for row in self.epochs], "best": None if self.best is None else dict(self.best)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs = [dict(row) for row in state["epochs"]]
        self.best = None if state["best"] is None else dict(state["best"])
        best_file = self.run_dir / f"{BEST}.safetensors"
        best_epoch = 0 if self.best is None else self.best["epoch"] + 1
        if best_file.exists() and read_meta(best_file).epoch != best_epoch:
            # Saved after the checkpoint being resumed (the stopped run got further): the resumed run writes it
            # again when it reproduces that epoch, which it does unless an option such as --epochs changed.
            logger.warning("%s is from epoch %d, past the checkpoint this run resumes from (best so far: epoch %d); "
                           "it is replaced by the resumed run's next best epoch", best_file.name,
                           read_meta(best_file).epoch, best_epoch)

    def save(self, progress: Progress, loop_state: LoopState) -> None:
        """The resumable checkpoint (``TrainLoop.save``): weights, optimizer, loop state and the evaluations."""
        save_point(self.run_dir, self.model, self.optimizer, self.meta(progress.epoch), self.keep_last, progress,
                   loop_state, extra={"classifier": self.state_dict()}, write=self.write)

    def finish(self) -> dict[str, Any]:
        """Write metrics.json and confusion.png for the final model (with ``test_at_end``, the chosen one);
        returns the metrics."""
        if self.pending is not None:  # the last epoch fell between evaluations
            epoch, record = self.pending
            self.eval_every = 1
            self.on_epoch_end(epoch, record)
        if self.test_at_end:
            self._test_chosen()
        assert self.result is not None and self.best is not None, "finish() after at least one epoch"
        last = self.epochs[-1]
        shown = self.best if self.test_at_end else last
        metrics = dict(
            best=self.best, last=last, selected_on=self.selected_on, epochs=self.epochs,
            class_names=list(self.class_names), confusion_matrix=self.result.confusion.tolist(),
            test_images=self.result.count, **self.extra, **skipped_files_summary(*self.images),
        )
        write_json(self.run_dir / "metrics.json", metrics)
        save_confusion_matrix(self.result.confusion, self.class_names, self.run_dir / "confusion.png",
                              f"{self.title}: top-1 {shown['top1']:.2f}% (epoch {shown['epoch'] + 1})")
        if self.test_at_end:
            logger.info("test top-1 %.2f%%, top-5 %.2f%% with the checkpoint chosen on %s (epoch %d); run directory "
                        "%s", shown["top1"], shown["top5"], self.selected_on, shown["epoch"] + 1, self.run_dir)
        else:
            logger.info("final test top-1 %.2f%%, top-5 %.2f%%; best (chosen on %s): epoch %d, test top-1 %.2f%%; "
                        "run directory %s", last["top1"], last["top5"], self.selected_on, self.best["epoch"] + 1,
                        self.best["top1"], self.run_dir)
        return metrics

    def hooks(self, is_main: bool) -> RunHooks:
        """This run as the training spine's hooks; only the main process writes the final metrics."""
        return RunHooks(save=self.save, on_epoch_end=self.on_epoch_end,
                        on_restore=lambda state: self.load_state_dict(state["classifier"]),
                        finish=self.finish if is_main else None)
