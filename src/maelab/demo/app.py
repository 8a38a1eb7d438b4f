"""The Gradio page of ``maelab demo``: upload or pick an image, choose the mask, see the reconstruction.

The page only wires widgets to :mod:`maelab.demo.pipeline`; each event gets its inputs as
arguments and returns its outputs, with no state shared between requests but the read-only model.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import IterableDataset

from maelab.checkpoint import LAST, read_meta, resolve_checkpoint
from maelab.data import BadFileOptions, DatasetInfo
from maelab.data.config import DatasetNotFoundError
from maelab.demo.anomaly_view import describe, reference_images, run_anomaly_view
from maelab.demo.pipeline import GRID_RATIO, load_upload, run_pipeline
from maelab.masking import MASK_STRATEGIES
from maelab.models import MaskedAutoencoder
from maelab.train.environment import resolve_device
from maelab.train.rundir import DEFAULT_RUNS
from maelab.visualize.reconstruct import checkpoint_test_set, load_mae

logger = logging.getLogger(__name__)

EXTRA_HINT = "maelab demo needs Gradio, which is an optional extra: pip install 'maelab[demo]'"
OUTPUT_LABELS = ("original", "masked input", "reconstruction", "reconstruction + visible patches",
                 "error per masked patch", "cls attention (last block)")
OUTPUT_IDS = ("original", "masked", "reconstruction", "pasted", "error", "attention")
CONCURRENCY = 4
MAX_UPLOAD = "64mb"
"""Gradio refuses bigger uploads before they reach the pipeline."""


@dataclass(frozen=True)
class DemoModel:
    """What the page serves: a read-only model, its data statistics and (when available) test images."""

    checkpoint: Path
    model: MaskedAutoencoder
    info: DatasetInfo
    epoch: int
    test_set: object | None
    test_set_note: str
    reference: torch.Tensor | None = None
    """(R, C, H, W) held-out images of the run's data that the anomaly view compares each image with."""
    reference_note: str = ""
    """What the reference images are, or why there are none."""


def gradio_available() -> bool:
    return importlib.util.find_spec("gradio") is not None


def newest_run(runs_dir: Path = DEFAULT_RUNS) -> Path:
    """The most recently written pre-training checkpoint under ``runs_dir``.

    Raises:
        FileNotFoundError: no pre-training run there, with how to make one.
    """
    candidates = []
    for weights in Path(runs_dir).glob(f"*/{LAST}.safetensors"):
        try:
            if read_meta(weights).kind == "mae":
                candidates.append(weights)
        except ValueError:
            continue
    if not candidates:
        raise FileNotFoundError(
            f"no pre-training run found under {runs_dir}/; make one with `maelab pretrain` "
            "(or pass a checkpoint: maelab demo runs/<run>)"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime).parent


def load_demo_model(checkpoint: Path, device: str = "cpu",
                    max_bad_fraction: float = BadFileOptions.max_bad_fraction) -> DemoModel:
    """Load the checkpoint and, when its dataset is on this machine, the dataset's test split (whose unreadable
    files the picker skips, up to ``max_bad_fraction``: ``--max-bad-fraction``)."""
    weights = resolve_checkpoint(checkpoint)
    model, info, extra = load_mae(weights, device)
    model.requires_grad_(False)
    try:
        # No download: the page should start at once, offline too; uploads work without the dataset.
        test_set, note = checkpoint_test_set(info, extra, download=False, max_bad_fraction=max_bad_fraction), ""
    except (DatasetNotFoundError, FileNotFoundError, ValueError) as exc:
        test_set, note = None, f"The training dataset's test split is not available here ({exc}); upload an image."
    if isinstance(test_set, IterableDataset):  # shards stream; the picker needs images by index
        test_set, note = None, "The training data is streamed from shards (no test image by number); upload an image."
    try:
        reference = reference_images(info, extra, max_bad_fraction=max_bad_fraction)
        classes = (extra.get("data") or {}).get("classes")
        of = f", class {' '.join(map(str, classes))} only" if classes else ""
        ref_note = f"held-out images of the run's data (the first of its {info.name} test split{of})"
    except (DatasetNotFoundError, FileNotFoundError, ValueError) as exc:
        reference, ref_note = None, f"No reference images to compare the score with ({exc})."
    return DemoModel(weights, model, info, read_meta(weights).epoch, test_set, note, reference, ref_note)


def build_app(served: DemoModel):
    """The page as a ``gradio.Blocks``; call ``.launch()`` on it."""
    import gradio as gr

    cfg, info = served.model.config, served.info
    num_test = len(served.test_set) if served.test_set is not None else 0

    def pick(upload, index):
        """The image to show (normalized) and its name in words; None when there is none."""
        if upload is not None:
            return load_upload(upload, info), f"your upload `{Path(upload).name}`"
        if served.test_set is not None:
            index = min(max(int(index or 0), 0), num_test - 1)
            return served.test_set[index][0], f"test image #{index} of {info.name}"
        return None, ""

    def show(upload, index, ratio, strategy, seed):
        blank = [None] * len(OUTPUT_IDS)
        try:
            image, source = pick(upload, index)
            if image is None:
                return [*blank, "", "Upload an image to start."]
            result = run_pipeline(served.model, info, image, ratio, strategy, int(seed or 0))
        except ValueError as exc:
            return [*blank, "", f"**Error:** {exc}"]
        grid_note = f" (grid masking always hides {GRID_RATIO:.0%})" if strategy == "grid" else ""
        summary = (
            f"**Masked-patch MSE: {result.mask_mse:.4f}** on {source}: {result.num_masked} of "
            f"{result.num_patches} patches hidden, ratio {result.mask_ratio:.2f}{grid_note}, {strategy} mask, "
            f"seed {int(seed or 0)}.\n\nError map: masked patches from black (0) to yellow "
            f"({result.max_patch_mse:.3f}, the worst patch); attention: the cls token's weight on each visible "
            f"patch, averaged over heads, dark to yellow; light gray: not covered.\n\n{result.explanation}"
        )
        pictures = [result.original, result.masked, result.reconstruction, result.pasted, result.error_map,
                    result.attention_map]
        return [*pictures, summary, ""]

    def score(upload, index, masks, seed, reduction, top_fraction):
        try:
            image, source = pick(upload, index)
            if image is None:
                return None, "Upload an image to score it."
            masks, seed = int(masks or 4), int(seed or 0)
            result = run_anomaly_view(served.model, info, image, masks, seed, reduction, float(top_fraction),
                                      served.reference)
        except ValueError as exc:
            return None, f"**Error:** {exc}"
        text = describe(result, masks, seed, reduction, float(top_fraction), cfg.target, served.reference_note)
        return result.heatmap, f"{source}: {text}"

    with gr.Blocks(title="maelab demo", analytics_enabled=False) as app:
        gr.Markdown(
            f"## maelab: MAE reconstruction\n`{served.checkpoint}`: epoch {served.epoch}, "
            f"{cfg.img_size[0]}x{cfg.img_size[1]} px, {cfg.in_chans} channel(s), {cfg.patch_size}x{cfg.patch_size} "
            f"patches ({cfg.num_patches}), target `{cfg.target}`, trained with mask ratio {cfg.mask_ratio}. "
            "Any image you upload is converted to the model's channels, resized and center-cropped to its input "
            "size and normalized with the statistics the checkpoint was trained with."
        )
        with gr.Row():
            upload = gr.File(label="your image (any size or mode)", file_types=["image"], type="filepath",
                             elem_id="upload")
            with gr.Column():
                index = gr.Slider(0, max(num_test - 1, 0), value=0, step=1, label=f"{info.name} test image",
                                  interactive=num_test > 0, elem_id="test-index")
                use_test = gr.Button("show the test image instead of the upload", interactive=num_test > 0,
                                     elem_id="use-test")
                if served.test_set_note:
                    gr.Markdown(served.test_set_note)
            with gr.Column():
                ratio = gr.Slider(0.05, 0.95, value=cfg.mask_ratio, step=0.05, label="mask ratio",
                                  elem_id="mask-ratio")
                strategy = gr.Radio(list(MASK_STRATEGIES), value="random", label="mask strategy",
                                    elem_id="strategy")
                seed = gr.Number(value=0, precision=0, label="seed (same seed, same mask)", elem_id="seed")
        status = gr.Markdown(elem_id="status")
        pictures = []
        with gr.Row():  # the paper's Figures 2-4
            pictures += [_picture(gr, label, elem) for label, elem in zip(OUTPUT_LABELS[:4], OUTPUT_IDS[:4])]
        with gr.Row():
            pictures += [_picture(gr, label, elem) for label, elem in zip(OUTPUT_LABELS[4:], OUTPUT_IDS[4:])]
            summary = gr.Markdown(elem_id="summary")
        gr.Markdown(
            "### Anomaly score against this run\nAs `maelab anomaly` scores images: complementary masks that "
            "together hide every patch, each patch's reconstruction error, one score per image. A run pre-trained "
            "on normal images only reconstructs those well; a high score and bright patches mark what it did not "
            "learn to expect."
        )
        with gr.Row():
            with gr.Column():
                masks = gr.Slider(2, 8, value=4, step=1, label="complementary masks K (mask ratio 1 - 1/K)",
                                  elem_id="anomaly-masks")
                reduction = gr.Radio(["top", "mean", "max"], value="top", label="image score from patch errors",
                                     elem_id="anomaly-score")
                top_fraction = gr.Slider(0.05, 1.0, value=0.1, step=0.05, label="top: share of patches averaged",
                                         elem_id="anomaly-top-fraction")
                anomaly_seed = gr.Number(value=0, precision=0, label="mask seed", elem_id="anomaly-seed")
            anomaly_map = _picture(gr, "patch error over the image", "anomaly-map")
            anomaly_summary = gr.Markdown(elem_id="anomaly-summary")
        use_test.click(lambda: None, outputs=upload)
        gr.on(
            [app.load, upload.change, index.change, masks.change, reduction.change, top_fraction.change,
             anomaly_seed.change],
            score, inputs=[upload, index, masks, anomaly_seed, reduction, top_fraction],
            outputs=[anomaly_map, anomaly_summary], trigger_mode="always_last", concurrency_limit=CONCURRENCY,
        )
        gr.on(
            [app.load, upload.change, index.change, ratio.change, strategy.change, seed.change],
            show, inputs=[upload, index, ratio, strategy, seed], outputs=[*pictures, summary, status],
            trigger_mode="always_last", concurrency_limit=CONCURRENCY,
        )
    return app


def _picture(gr, label: str, elem_id: str):
    return gr.Image(label=label, type="numpy", interactive=False, elem_id=elem_id, format="png",
                    buttons=["download"])


def serve(checkpoint: Path | None, host: str = "127.0.0.1", port: int = 7860, device: str = "auto",
          max_bad_fraction: float = BadFileOptions.max_bad_fraction) -> None:
    """Load the checkpoint (default: the newest run) and serve the page until interrupted."""
    if not gradio_available():
        raise ValueError(EXTRA_HINT)
    if not 0 < port < 65536:
        raise ValueError(f"--port must be between 1 and 65535; got {port}")
    checkpoint = newest_run() if checkpoint is None else checkpoint
    served = load_demo_model(checkpoint, resolve_device(device), max_bad_fraction)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests, one line each
    logger.info("serving %s on http://%s:%d", served.checkpoint, host, port)
    build_app(served).queue(default_concurrency_limit=CONCURRENCY).launch(
        server_name=host, server_port=port, share=False, show_error=True, max_file_size=MAX_UPLOAD
    )
