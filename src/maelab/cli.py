"""The ``maelab`` command line: typed dataclasses parsed by tyro, one subcommand each."""

from __future__ import annotations

import errno
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from maelab.engine.bench import BenchConfig
from maelab.engine.config import PretrainConfig
from maelab.engine.eval_config import FinetuneConfig, KnnConfig, LinprobeConfig
from maelab.engine.loop import TrainingDiverged, TrainingInterrupted

logger = logging.getLogger("maelab")


@dataclass(frozen=True)
class Pretrain:
    """Pre-train a Masked Autoencoder (default: mae_vit_fashion on Fashion-MNIST, ~10 min on 2 CPU cores)."""

    config: Annotated[PretrainConfig, tyro.conf.arg(name="")] = field(default_factory=PretrainConfig)
    resume: Path | None = None
    """Continue the run in this directory (its own config is used; --epochs may extend it)."""

    def run(self) -> None:
        from maelab.engine.pretrain import pretrain

        pretrain(self.config, self.resume)


@dataclass(frozen=True)
class Reconstruct:
    """Draw original / masked / reconstructed images from a checkpoint (the paper's Figs. 2-4)."""

    checkpoint: tyro.conf.Positional[Path]
    """A pre-training checkpoint (.safetensors) or run directory, an official MAE .pth, or a Hugging Face directory."""
    images: tyro.conf.Positional[tuple[Path, ...]] = ()
    """Image files (default: the first test images of the checkpoint's dataset)."""
    dataset: str | None = None
    """Dataset to draw images from when no files are given (default: the checkpoint's)."""
    data: Path | None = None
    num_images: int = 8
    mask_ratio: float = 0.75
    mask_strategy: str = "random"
    seed: int = 0
    output: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("reconstruction.png")
    device: str = "cpu"
    target: Literal["pixel", "norm_pixel"] | None = None
    """What an official .pth predicts, when its name (mae_visualize_* / *_full) does not say."""

    def run(self) -> None:
        from maelab.engine.reconstruct import ReconstructConfig, run_reconstruct

        run_reconstruct(ReconstructConfig(**{k: getattr(self, k) for k in self.__dataclass_fields__}))


@dataclass(frozen=True)
class Models:
    """List the model presets with their sizes and parameter counts."""

    def run(self) -> None:
        from maelab.engine.report import models_table

        print(models_table())


@dataclass(frozen=True)
class Finetune:
    """Fine-tune a pre-trained encoder (partly: --tune-blocks; from scratch: --init none); top-1/top-5 per epoch."""

    config: Annotated[FinetuneConfig, tyro.conf.arg(name="")]
    resume: Path | None = None
    """Continue the run in this directory (its own config is used; --epochs may extend it)."""

    def run(self) -> None:
        from maelab.engine.finetune import finetune

        finetune(self.config, self.resume)


@dataclass(frozen=True)
class Linprobe:
    """Linear probe (BatchNorm + linear head, LARS) on a frozen pre-trained encoder; baselines: --init none
    (random-init encoder), --init pixels (raw pixels)."""

    config: Annotated[LinprobeConfig, tyro.conf.arg(name="")]
    resume: Path | None = None
    """Continue the run in this directory (its own config is used; --epochs may extend it)."""

    def run(self) -> None:
        from maelab.engine.linprobe import linprobe

        linprobe(self.config, self.resume)


@dataclass(frozen=True)
class Knn:
    """Weighted kNN classification (k=20, T=0.07) on a frozen pre-trained encoder's features; baselines:
    --init none (random-init encoder), --init pixels (raw pixels)."""

    config: Annotated[KnnConfig, tyro.conf.arg(name="")]

    def run(self) -> None:
        from maelab.engine.knn import run_knn

        run_knn(self.config)


@dataclass(frozen=True)
class Bench:
    """Measure pre-training throughput, FLOPs, MFU (against the same run's matmul peak), memory and
    encoder inference speed for presets, batch sizes and variants; writes <output>.json and <output>.md."""

    config: Annotated[BenchConfig, tyro.conf.arg(name="")] = field(default_factory=BenchConfig)

    def run(self) -> None:
        from maelab.engine.bench import run_bench

        run_bench(self.config, sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "bench" else None)


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
class Demo:
    """Reconstruct your own images in the browser: upload, move the mask-ratio slider, see what the MAE fills in.
    Needs the demo extra: pip install 'maelab[demo]'."""

    checkpoint: tyro.conf.Positional[Path | None] = None
    """A pre-training checkpoint (.safetensors) or run directory; default: the newest run under runs/."""
    host: str = "127.0.0.1"
    """Address to listen on; the default serves this machine only (0.0.0.0 shares it with your network)."""
    port: int = 7860
    device: str = "cpu"

    def run(self) -> None:
        from maelab.demo.app import serve

        serve(self.checkpoint, self.host, self.port, self.device)


@dataclass(frozen=True)
class Export:
    """Export a checkpoint (maelab, official MAE .pth or Hugging Face directory) to timm, Hugging Face,
    ONNX (the encoder, checked through onnxruntime) or plain safetensors; a fine-tuned or probed
    classifier to timm with its head."""

    checkpoint: tyro.conf.Positional[Path]
    """A maelab checkpoint or run directory, an official MAE .pth, or a Hugging Face directory."""
    to: Literal["timm", "hf", "onnx", "safetensors"]
    output: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None
    """Output file (a directory for hf); default: beside the checkpoint."""
    encoder_only: bool = False
    """hf / safetensors: the encoder alone (timm and onnx always export the encoder)."""
    target: Literal["pixel", "norm_pixel"] | None = None
    """What an official .pth predicts, when its name (mae_visualize_* / *_full) does not say."""
    img_size: int | None = None
    """Export for this input size (position embeddings resampled to the new patch grid)."""
    head_classes: int = 1000
    """timm, pre-training checkpoints: a zero-initialized (untrained) head of this many classes, so timm's
    ImageNet names (vit_base_patch16_224) load the file as-is; 0: no head (for the .mae tags). A fine-tuned
    or probed checkpoint exports its own trained head."""

    def run(self) -> None:
        from maelab.interop.export import ExportConfig, run_export

        run_export(ExportConfig(**{k: getattr(self, k) for k in self.__dataclass_fields__}))


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
        from maelab.engine.ablate import run_sweep

        _, failed = run_sweep(self.sweep, self.output_dir, self.isolate, self.only, self.reuse)
        if failed:
            logger.error("%d cell(s) of the sweep are not finished ok; see the table (rerun to retry them)", failed)
        return 1 if failed else 0


COMMANDS = {"pretrain": Pretrain, "reconstruct": Reconstruct, "models": Models, "finetune": Finetune,
            "linprobe": Linprobe, "knn": Knn, "ablate": Ablate, "bench": Bench, "shard": Shard, "demo": Demo,
            "export": Export}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``maelab`` console script; returns the exit status."""
    from maelab.engine.distributed import env_rank, shutdown

    # Under torchrun only rank 0 reports progress; the others speak up for warnings and errors.
    logging.basicConfig(level=logging.INFO if env_rank() == 0 else logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        return _run(argv)
    finally:
        shutdown(wait=False)  # after an error; a finished command has left the group already


def _run(argv: list[str] | None) -> int:
    from maelab.engine.distributed import shutdown

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
    except (ValueError, FileNotFoundError) as exc:
        print(f"maelab: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        print(f"maelab: error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
