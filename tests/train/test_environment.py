"""--device auto picks CUDA, then Apple's MPS, then the CPU; an explicit device that is not there exits 2."""

from __future__ import annotations

import pytest
import torch

from maelab.train import environment
from maelab.train.environment import resolve_device


def _available(monkeypatch, cuda: bool, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2 if cuda else 0)
    monkeypatch.setattr(environment, "mps_available", lambda: mps)


@pytest.mark.parametrize(("cuda", "mps", "expected"), [
    (True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu"),
])
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    _available(monkeypatch, cuda, mps)
    assert resolve_device("auto").type == expected


def test_mps_available_reads_the_backend(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert environment.mps_available()
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert not environment.mps_available()


def test_explicit_devices(monkeypatch):
    _available(monkeypatch, cuda=True, mps=True)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("mps").type == "mps"
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="only 2 CUDA"):
        resolve_device("cuda:2")
    _available(monkeypatch, cuda=False, mps=False)
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="MPS is not available"):
        resolve_device("mps")
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="maelab runs on"):
        resolve_device("meta")


def test_reconstruct_and_demo_default_to_auto():
    from maelab.cli import Demo
    from maelab.visualize.config import ReconstructConfig

    assert Demo.device == "auto" and ReconstructConfig.__dataclass_fields__["device"].default == "auto"
