#!/usr/bin/env bash
# Install maelab and what it needs into a virtual environment (.venv, or $MAELAB_VENV).
#   ./install.sh          the package, PyTorch and the real Fashion-MNIST (Debian package, when apt is usable)
#   ./install.sh --test   the same plus the test extras (pytest, transformers, scikit-image, onnx,
#                         onnxruntime, onnxscript, gradio, tensorboard, playwright, torchcodec)
#                         and Debian's chromium for the browser tests (when apt is usable as root)
# A venv keeps clear of system Pythons that refuse pip installs (PEP 668, Debian 12 and later).
# PyTorch goes first: left to pip's resolver, a range like torch>=2.2 pulls the newest CUDA build
# (several GB). MAELAB_TORCH overrides the tested pair below, e.g. MAELAB_TORCH="torch torchvision".
set -euo pipefail
cd "$(dirname "$0")"
VENV=${MAELAB_VENV:-.venv}
extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"
as_root=$([[ $(id -u) == 0 ]] && echo yes || echo no)

if command -v apt-get >/dev/null 2>&1 && [[ $as_root == yes ]] && [[ ! -d /usr/share/datasets/fashion-mnist ]]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
    || echo "install.sh: could not install dataset-fashion-mnist; maelab will download Fashion-MNIST instead" >&2
fi

if [[ -n $extras ]] && command -v apt-get >/dev/null 2>&1 && [[ $as_root == yes ]] \
  && ! command -v chromium >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
    || echo "install.sh: could not install chromium; the browser tests of maelab demo will be skipped" >&2
fi

if [[ ! -x $VENV/bin/python ]]; then
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    if command -v apt-get >/dev/null 2>&1 && [[ $as_root == yes ]]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && python3 -m venv "$VENV"
    else
      echo "install.sh: python3 -m venv failed; install your distribution's python3-venv package" >&2
      exit 1
    fi
  fi
fi
PY=$VENV/bin/python

if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  "$PY" -m pip install -q ${MAELAB_TORCH:-"torch==2.14.1" "torchvision==0.29.1"}
fi
"$PY" -m pip install -q -e ".${extras}"
echo "install.sh: maelab installed in $VENV ($("$PY" -c 'import torch; print("torch", torch.__version__)')); run 'source $VENV/bin/activate' to put 'maelab' on PATH"
