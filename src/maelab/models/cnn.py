"""The supervised baseline a practitioner would train instead of a ViT: any timm CNN, from random init.

timm's ImageNet networks cut a 224-pixel image by 4 in their stem (a stride-2 7x7 convolution, then a stride-2
max pool) and by 32 in all; on 28x28 images that leaves a 1x1 map after the third stage. For small images (as for
CIFAR) the stem's convolution becomes a 3x3 stride-1 one of the same width. The max pool stays: the first stage
then works on 14x14 maps of a 28x28 image and the last on 2x2, at a quarter of the cost of dropping it too (which
made a ResNet-18 step 2.6x slower on a 2-core CPU for 28x28 images). :func:`build_cnn` applies it to timm's ResNet
family below :data:`SMALL_INPUT` pixels, and the checkpoint records it (``small_input_stem``) so the same network
is rebuilt for evaluation or export.
"""

from __future__ import annotations

import timm
from timm.models.resnet import ResNet
from torch import nn

SMALL_INPUT = 64
"""Images smaller than this many pixels on a side get the small-input stem (ResNet family)."""


def cnn_config(arch: str, in_chans: int, num_classes: int, img_size: int) -> dict:
    """The ``model_config`` a CNN classifier checkpoint records: what :func:`build_cnn` needs to rebuild it."""
    if arch not in timm.list_models():
        raise ValueError(f"--arch {arch!r} is not a timm model; pick one of timm.list_models(), e.g. resnet18")
    return dict(kind="cnn", arch=arch, in_chans=in_chans, num_classes=num_classes, img_size=img_size,
                small_input_stem=img_size < SMALL_INPUT)


def build_cnn(cfg: dict, drop_path_rate: float = 0.0) -> nn.Module:
    """A randomly initialized timm network from :func:`cnn_config`, with the small-input stem where recorded."""
    extra = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
    model = timm.create_model(cfg["arch"], pretrained=False, in_chans=cfg["in_chans"],
                              num_classes=cfg["num_classes"], **extra)
    if cfg["small_input_stem"]:
        small_input_stem(model)
    return model


def small_input_stem(model: nn.Module) -> None:
    """Halve a timm ResNet's stem stride for small images: a plain stem (``conv1`` a convolution) becomes a 3x3
    stride-1 convolution of the same width; a deep stem (``conv1`` a sequence, resnet10t, resnet18d, ...) keeps
    its layers with its first convolution at stride 1. The max pool after it stays.

    Raises:
        ValueError: the network is not a timm ResNet (the adaptation would have to be written for it); the
            message names what to do instead.
    """
    if not isinstance(model, ResNet):
        raise ValueError(f"{type(model).__name__} has no small-image stem adaptation in maelab; use a timm ResNet "
                         f"(resnet18, resnet10t, resnet50, ...) or images of at least {SMALL_INPUT} pixels "
                         "(--img-size)")
    if isinstance(model.conv1, nn.Conv2d):
        conv = model.conv1
        model.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    else:
        first = next(m for m in model.conv1.modules() if isinstance(m, nn.Conv2d))
        first.stride = (1, 1)
