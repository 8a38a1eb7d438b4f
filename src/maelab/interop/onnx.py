"""The encoder as ONNX, checked against maelab through onnxruntime.

Input ``pixel_values`` (B, C, H, W) normalized images, any batch size; output ``tokens``
(B, 1 + L, D): the cls token and every patch token after the final norm, as
``MaskedAutoencoder.forward_encoder(x, None)`` (and timm's ``forward_features``) give them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from maelab.interop.imported import ImportedModel
from maelab.models.mae import MaskedAutoencoder

logger = logging.getLogger(__name__)

PARITY_ATOL = 1e-4
"""Export-time check only; the tests hold exports to 1e-5."""


class EncoderOnly(nn.Module):
    """The encoder of a MaskedAutoencoder on every patch (no masking): images -> tokens."""

    def __init__(self, model: MaskedAutoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.model.forward_encoder(imgs, None)  # (B, 1 + L, D)


def onnx_session(path: Path):
    """An onnxruntime CPU session (ValueError with the fix when onnxruntime is missing)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ValueError("ONNX needs onnxruntime: pip install 'maelab[onnx]'") from exc
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@torch.no_grad()
def export_onnx(imported: ImportedModel, output: Path, seed: int = 0) -> float:
    """Write the encoder to ``output`` and return its max deviation from maelab on a random batch."""
    try:
        import onnxscript  # noqa: F401  (the exporter's backend; imported here for a clear message)
    except ImportError as exc:
        raise ValueError("ONNX export needs onnx and onnxscript: pip install 'maelab[onnx]'") from exc
    encoder = EncoderOnly(imported.build(require_decoder=False)).eval()
    c = imported.config
    g = torch.Generator().manual_seed(seed)
    example = torch.randn(2, c.in_chans, *c.img_size, generator=g)  # (B, C, H, W)
    output.parent.mkdir(parents=True, exist_ok=True)
    # One self-contained file unless the weights pass protobuf's 2 GB limit (ViT-H): then beside it, .data.
    external = sum(v.numel() * v.element_size() for v in imported.weights.values()) > 1.5 * 2**30
    # The exporter's graph passes log every folded node and initializer at INFO.
    chatty = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript")]
    levels = [log.level for log in chatty]
    for log in chatty:
        log.setLevel(logging.WARNING)
    try:
        torch.onnx.export(
            encoder, (example,), str(output), input_names=["pixel_values"], output_names=["tokens"],
            dynamic_shapes={"imgs": {0: torch.export.Dim("batch")}}, dynamo=True, verbose=False,
            external_data=external,
        )
    finally:
        for log, level in zip(chatty, levels, strict=True):
            log.setLevel(level)
    check = torch.randn(3, c.in_chans, *c.img_size, generator=g)  # another batch size than the example
    got = torch.from_numpy(onnx_session(output).run(None, {"pixel_values": check.numpy()})[0])
    diff = float((got - encoder(check)).abs().max())
    if diff > PARITY_ATOL:
        output.unlink(missing_ok=True)
        raise RuntimeError(f"the ONNX encoder deviates from maelab by {diff:.2e} (> {PARITY_ATOL}); nothing written")
    logger.info("ONNX parity: max |onnxruntime - maelab| = %.2e on a (3, %d, %d, %d) batch", diff, c.in_chans,
                *c.img_size)
    return diff
