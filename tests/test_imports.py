"""What `maelab` loads at start-up: no optional extra, nothing of FSDP; a missing extra breaks only its feature."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "maelab"
EXTRAS = ("webdataset", "gradio", "tensorboard", "transformers", "onnx", "onnxruntime", "onnxscript", "torchcodec")
# Loaded only where a model is sharded (maelab.train.fsdp, inside its functions).
FSDP_ONLY = ("torch.distributed.fsdp", "torch.distributed.tensor", "torch.distributed.checkpoint")


def _module_level_imports(path: Path) -> list[str]:
    names = []
    for node in ast.parse(path.read_text()).body:  # top-level statements only: not inside functions
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def test_no_module_imports_an_extra_or_fsdp_at_import_time():
    offenders = [(str(path.relative_to(SRC)), name) for path in sorted(SRC.rglob("*.py"))
                 for name in _module_level_imports(path)
                 if name.split(".")[0] in EXTRAS or name.startswith(FSDP_ONLY)]
    assert offenders == []


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_help_and_models_work_with_every_extra_missing():
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in EXTRAS)  # import of each raises ImportError
    code = (f"import sys; {blocked}\n"
            "from maelab.cli import main\n"
            "assert main(['models']) == 0\n"
            "assert 'maelab.train.fsdp' not in sys.modules, 'FSDP support loaded at start-up'\n"
            "try:\n    main(['--help'])\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n")
    done = _run(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mae_vit_base_patch16" in done.stdout and "pretrain" in done.stdout
