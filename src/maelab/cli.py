"""The ``maelab`` command line: typed dataclasses parsed by tyro, one subcommand each."""

from __future__ import annotations

import errno
import logging
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from maelab.anomaly.config import AnomalyConfig
from maelab.bench.config import BenchConfig
from maelab.data import BadFileOptions
from maelab.evaluate.config import EmbedConfig, KnnConfig, LinprobeConfig
from maelab.finetune.config import FinetuneConfig
from maelab.interop.export import ExportConfig
from maelab.pretrain.config import PretrainConfig
from maelab.train.loop import TrainingDiverged
from maelab.train.signals import TrainingInterrupted
from maelab.visualize.config import ReconstructConfig

logger = logging.getLogger("maelab")


@dataclass(frozen=True)
class Pretrain:
    """Pre-train a Masked Autoencoder (default: mae_vit_fashion_patch7 on Fashion-MNIST, a 10-minute time budget)."""

    config: Annotated[PretrainConfig, tyro.conf.arg(name="")] = field(default_factory=PretrainConfig)
    resume: Path | None = None
    """Continue the run in this directory (its own config is used; --epochs may extend it)."""

    def run(self) -> None:
        from maelab.pretrain.command import pretrain

        pretrain(self.config, self.resume)


@dataclass(frozen=True)
class Reconstruct:
    """Draw original / masked / reconstructed images from a checkpoint (the paper's Figs. 2-4)."""

    config: Annotated[ReconstructConfig, tyro.conf.arg(name="")]

    def run(self) -> None:
        from maelab.visualize.reconstruct import run_reconstruct

        run_reconstruct(self.config)


@dataclass(frozen=True)
class Models:
    """List the model presets with their sizes and parameter counts."""

    def run(self) -> None:
        from maelab.models.registry import models_table

        print(models_table())


@dataclass(frozen=True)
class Finetune:
    """Fine-tune a pre-trained encoder (partly: --tune-blocks; from scratch: --init none); top-1/top-5 per epoch."""

    config: Annotated[FinetuneConfig, tyro.conf.arg(name="")]
    resume: Path | None = None
    """Continue the run in this directory (its own config is used; --epochs may extend it)."""

    def run(self) -> None:
        from maelab.finetune.command import finetune

        finetune(self.config, self.resume)


@dataclass(frozen=True)
class Linprobe:
    """Linear probe on a frozen encoder (maelab linprobe RUN): a logistic regression on standardized features
    solved by L-BFGS, its L2 strength chosen on validation (--optimizer lars / sgd: the paper's trained head);
    baselines: --init none (random-init encoder), --init pixels (raw pixels)."""

    config: Annotated[LinprobeConfig, tyro.conf.arg(name="")]
    resume: Path | None = None
    """Continue the run in this directory (its own config is used; --epochs may extend it)."""

    def run(self) -> None:
        from maelab.evaluate.linprobe import linprobe

        linprobe(self.config, self.resume)


@dataclass(frozen=True)
class Knn:
    """Weighted kNN classification (k=20, T=0.07) on a frozen pre-trained encoder's features; baselines:
    --init none (random-init encoder), --init pixels (raw pixels)."""

    config: Annotated[KnnConfig, tyro.conf.arg(name="")]

    def run(self) -> None:
        from maelab.evaluate.knn import run_knn

        run_knn(self.config)


@dataclass(frozen=True)
class Embed:
    """Features of every image (all patches visible, pooled as the probe pools them) as one safetensors or .npy
    matrix, with an index of the images (<stem>.csv) and a summary naming skipped unreadable files (<stem>.json)."""

    config: Annotated[EmbedConfig, tyro.conf.arg(name="")]

    def run(self) -> None:
        from maelab.evaluate.embed import run_embed

        run_embed(self.config)


@dataclass(frozen=True)
class Anomaly:
    """Score images by reconstruction error (complementary masks hiding every patch) and by kNN distance to the
    normal training images; per-image scores, heat maps of the most anomalous, AUROC/AUPRC when labels are known."""

    config: Annotated[AnomalyConfig, tyro.conf.arg(name="")]

    def run(self) -> None:
        from maelab.anomaly.command import run_anomaly

        run_anomaly(self.config)


@dataclass(frozen=True)
class Bench:
    """Measure pre-training throughput, FLOPs, MFU (against the same run's matmul peak), memory and
    encoder inference speed for presets, batch sizes and variants; writes <output>.json and <output>.md."""

    config: Annotated[BenchConfig, tyro.conf.arg(name="")] = field(default_factory=BenchConfig)

    def run(self) -> None:
        from maelab.bench.runner import run_bench

        run_bench(self.config)


@dataclass(frozen=True)
class Shard:
    """Write an image folder's train/test splits as WebDataset tar shards (original bytes, labels, shards.json)."""

    image_folder: tyro.conf.Positional[Path]
    out_dir: tyro.conf.Positional[Path]
    max_per_shard: int = 1000
    """Images per shard; use at least (ranks x loader workers) shards per split."""

    def run(self) -> None:
        from maelab.data.shards import write_shards

        write_shards(self.image_folder, self.out_dir, self.max_per_shard)


@dataclass(frozen=True)
class Demo(BadFileOptions):
    """Reconstruct your own images in the browser: upload, move the mask-ratio slider, see what the MAE fills in.
    Needs the demo extra: pip install 'maelab[demo]'."""

    checkpoint: tyro.conf.Positional[Path | None] = None
    """A pre-training checkpoint (.safetensors) or run directory; default: the newest run under runs/."""
    host: str = "127.0.0.1"
    """Address to listen on; the default serves this machine only (0.0.0.0 shares it with your network)."""
    port: int = 7860
    device: str = "auto"
    """"auto" (CUDA, else Apple's MPS, else the CPU), "cpu", "cuda", "cuda:N" or "mps"."""

    def run(self) -> None:
        from maelab.demo.app import serve

        serve(self.checkpoint, self.host, self.port, self.device, self.max_bad_fraction)


@dataclass(frozen=True)
class Export:
    """Export a checkpoint (maelab, official MAE .pth or Hugging Face directory) to timm, Hugging Face,
    ONNX (the encoder, checked through onnxruntime) or plain safetensors; a fine-tuned or probed
    classifier to timm with its head."""

    config: Annotated[ExportConfig, tyro.conf.arg(name="")]

    def run(self) -> None:
        from maelab.interop.export import run_export

        run_export(self.config)


@dataclass(frozen=True)
class Ablate:
    """Run a sweep of pre-training variants (a YAML file, or a built-in name such as mask_ratio), evaluate
    each cell (linear probe + kNN, fine-tune optional), write results.csv, results.md and plots. Resumable."""

    sweep: tyro.conf.Positional[str]
    """Sweep file (YAML) or built-in sweep name (see src/maelab/sweeps)."""
    output_dir: Path | None = None
    """Sweep directory; default runs/ablate/<sweep name>. Rerunning with the same directory resumes."""
    isolate: bool = True
    """Run each cell in its own Python process (a crash or kill loses only that cell)."""
    only: tuple[str, ...] = ()
    """Run only these cells (names like mask_ratio=0.75-seed0, or without the -seedN suffix)."""
    reuse: bool = True
    """Take the numbers of an identically configured cell finished in a sibling sweep directory instead of
    training it again (recorded as reused_from). Turn off when the sweep compares wall times."""

    def run(self) -> int:
        from maelab.ablate.runner import run_sweep

        _, failed = run_sweep(self.sweep, self.output_dir, self.isolate, self.only, self.reuse)
        if failed:
            logger.error("%d cell(s) of the sweep are not finished ok; see the table (rerun to retry them)", failed)
        return 1 if failed else 0


COMMANDS = {"pretrain": Pretrain, "reconstruct": Reconstruct, "models": Models, "finetune": Finetune,
            "linprobe": Linprobe, "knn": Knn, "ablate": Ablate, "bench": Bench, "shard": Shard, "demo": Demo,
            "export": Export, "embed": Embed, "anomaly": Anomaly}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``maelab`` console script; returns the exit status."""
    from maelab.train.distributed import env_rank, shutdown

    # Under torchrun only rank 0 reports progress; the others speak up for warnings and errors.
    logging.basicConfig(level=logging.INFO if env_rank() == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        return _run(argv)
    finally:
        shutdown(wait=False)  # after an error; a finished command has left the group already


def _run(argv: list[str] | None) -> int:
    from maelab.train.distributed import shutdown

    try:
        # Inside the try: a top-level config's own validation raises ValueError out of tyro.
        try:
            command = tyro.extras.subcommand_cli_from_dict(
                {name: cls for name, cls in COMMANDS.items()},
                args=argv,
                prog="maelab",
                config=(tyro.conf.OmitArgPrefixes, tyro.conf.OmitSubcommandPrefixes),
            )
        except SystemExit as exc:
            # tyro has printed the problem (or the help); its status is ours: 2 for a bad option.
            return exc.code if isinstance(exc.code, int) else 2 if exc.code else 0
        status = command.run()
        shutdown()
    except TrainingDiverged as exc:
        logger.error("%s", exc)
        return 1
    except TrainingInterrupted as exc:
        logger.warning("%s", exc)
        return exc.exit_status
    except Exception as exc:  # noqa: BLE001 (every failure gets its status and its one report here)
        if is_user_error(exc):
            print(f"maelab: error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            print(f"maelab: error: {exc.strerror or exc}", file=sys.stderr)
            return 1
        traceback.print_exception(exc, file=sys.stderr)
        print(f"maelab: internal error: {type(exc).__name__}: {exc}\n(not a problem with the options given: a bug "
              "in maelab or a library it uses; the traceback above shows where)", file=sys.stderr)
        return 1
    return status or 0


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` reports a bad option or input (exit 2, one line) rather than a bug (exit 1, traceback).

    maelab checks options and inputs itself and raises ValueError from its own code; the same ValueError from
    inside torch, numpy or another library (the innermost frame of its traceback is theirs) means maelab passed
    them something wrong: a bug, shown with its traceback. A missing file is always a path the user gave.
    """
    if isinstance(exc, FileNotFoundError):
        return True
    if not isinstance(exc, ValueError):
        return False
    tb = exc.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", ""))
    return module == "maelab" or module.startswith("maelab.")


if __name__ == "__main__":
    sys.exit(main())
