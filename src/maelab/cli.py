"""The ``maelab`` command line: typed dataclasses parsed by tyro, one subcommand each."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from maelab.engine.config import PretrainConfig
from maelab.engine.eval_config import FinetuneConfig, KnnConfig, LinprobeConfig
from maelab.engine.loop import TrainingDiverged

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
    """A pre-training checkpoint (.safetensors) or run directory."""
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

    def run(self) -> None:
        from maelab.engine.finetune import finetune

        finetune(self.config)


@dataclass(frozen=True)
class Linprobe:
    """Linear probe (BatchNorm + linear head, LARS) on a frozen pre-trained encoder; baselines: --init none
    (random-init encoder), --init pixels (raw pixels)."""

    config: Annotated[LinprobeConfig, tyro.conf.arg(name="")]

    def run(self) -> None:
        from maelab.engine.linprobe import linprobe

        linprobe(self.config)


@dataclass(frozen=True)
class Knn:
    """Weighted kNN classification (k=20, T=0.07) on a frozen pre-trained encoder's features; baselines:
    --init none (random-init encoder), --init pixels (raw pixels)."""

    config: Annotated[KnnConfig, tyro.conf.arg(name="")]

    def run(self) -> None:
        from maelab.engine.knn import run_knn

        run_knn(self.config)


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

    def run(self) -> int:
        from maelab.engine.ablate import run_sweep

        _, failed = run_sweep(self.sweep, self.output_dir, self.isolate, self.only)
        if failed:
            logger.error("%d cell(s) of the sweep are not finished ok; see the table (rerun to retry them)", failed)
        return 1 if failed else 0


COMMANDS = {"pretrain": Pretrain, "reconstruct": Reconstruct, "models": Models, "finetune": Finetune,
            "linprobe": Linprobe, "knn": Knn, "ablate": Ablate}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``maelab`` console script; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        # Inside the try: a top-level config's own validation raises ValueError out of tyro.
        command = tyro.extras.subcommand_cli_from_dict(
            {name: cls for name, cls in COMMANDS.items()},
            args=argv,
            prog="maelab",
            config=(tyro.conf.OmitArgPrefixes, tyro.conf.OmitSubcommandPrefixes),
        )
        status = command.run()
    except TrainingDiverged as exc:
        logger.error("%s", exc)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        print(f"maelab: error: {exc}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
