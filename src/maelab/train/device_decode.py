"""The device half of ``pretrain --decode-on-device``: decode a batch of JPEGs where the model trains.

The loader (:class:`~maelab.data.encoded_folder.EncodedFolderDataset`) hands over JPEG bytes and crop
boxes; here one batched ``decode_jpeg(..., device=...)`` call decodes them (nvJPEG on a GPU,
libjpeg-turbo on the CPU; TorchCodec's when installed, else torchvision's: :mod:`maelab.data.jpeg`),
and each box is cut and resized to the model's size with torchvision's own RandomResizedCrop kernel
(bicubic, antialias) on that device. On the CPU the result equals the ``--device-augment`` batch exactly;
on a GPU nvJPEG's IDCT and the CUDA resize kernel may differ from the CPU's by a few grey levels.
"""

from __future__ import annotations

import logging

import torch

from maelab.data.config import DataConfig, DatasetInfo
from maelab.data.encoded_folder import EncodedBatch, EncodedFolderDataset, EncodedItem
from maelab.data.jpeg import JpegDecoder, jpeg_decoder
from maelab.data.transforms import resized_crop_uint8
from maelab.train.loader import SeededSamples

logger = logging.getLogger(__name__)


def check_decode_on_device(data: DataConfig) -> None:
    """ValueError naming the fix when ``--decode-on-device`` cannot serve ``data``."""
    if data.dataset != "folder":
        raise ValueError(f"--decode-on-device decodes the JPEG files of an image folder (--dataset folder), not "
                         f"--dataset {data.dataset}; drop --decode-on-device (--device-augment keeps the "
                         "flip and normalization on the device for any dataset)")
    if data.augment != "random_resized_crop":
        raise ValueError(f"--decode-on-device implements the default augmentation only, not --augment {data.augment}; "
                         "drop one of the two")


class DeviceDecoder:
    """``EncodedBatch -> uint8 (B, channels, H, W)`` on ``device``: the batch the ``--device-augment``
    loader would have produced, before its flip and normalization.

    A JPEG that fails to decode (its header was fine in the loader, its data is not) is marked bad in
    ``dataset`` (counted, logged, ValueError past ``--max-bad-fraction``) and its slot redrawn in this
    process from the same (index, seed), which substitutes the next readable file as the loader does.
    """

    def __init__(self, dataset: EncodedFolderDataset, info: DatasetInfo, device: torch.device,
                 decoder: JpegDecoder | None = None) -> None:
        self.dataset = dataset
        self.redraw = SeededSamples(dataset)
        self.size = info.img_size
        self.channels = info.channels
        self.device = device
        self.decode = decoder or jpeg_decoder(device)  # the installed library that works on ``device``
        logger.info("--decode-on-device: JPEGs are decoded on %s by %s%s", device, self.decode.library,
                    "" if self.decode.library == "torchcodec" else
                    " (pip install 'maelab[torchcodec]' for TorchCodec, which replaces its deprecated decoders)")

    def __call__(self, batch: EncodedBatch) -> torch.Tensor:
        encoded = batch.encoded.tolist()
        rows = [r for r, enc in enumerate(encoded) if enc]
        decoded: dict[int, torch.Tensor] = {}
        if rows:
            try:
                images = self.decode([batch.jpeg(r) for r in rows], self.channels, self.device)
                decoded = dict(zip(rows, images))  # row -> (channels, H_in, W_in) uint8
            except RuntimeError:
                pass  # a broken file fails the whole call: the rows are decoded one by one below
        boxes = batch.boxes.tolist()
        pixels = iter(batch.pixels.to(self.device, non_blocking=True))  # K x (channels, H, W)
        crops = []
        for r, enc in enumerate(encoded):
            if not enc:
                crops.append(next(pixels))
            elif r in decoded:
                crops.append(resized_crop_uint8(decoded[r], tuple(boxes[r]), self.size))
            else:
                crops.append(self._recover(batch.item(r)))
        return torch.stack(crops)  # (B, channels, H, W)

    def _recover(self, item: EncodedItem) -> torch.Tensor:
        """The crop of ``item``, decoded alone; broken files are marked and the slot redrawn."""
        while item.encoded:
            try:
                image = self.decode(item.data, self.channels, self.device)  # (channels, H_in, W_in)
                return resized_crop_uint8(image, item.box, self.size)
            except RuntimeError as exc:
                self.dataset.mark_bad(item.file, OSError(f"{self.decode.library} decode_jpeg: {exc}"))
                redrawn, _ = self.redraw[(item.key, item.seed)]
                item = redrawn
        return item.data.to(self.device, non_blocking=True)
