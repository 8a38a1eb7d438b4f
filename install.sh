#!/usr/bin/env bash
# Install maelab and what it needs on a fresh Debian-like machine.
#   ./install.sh          the package, PyTorch and the real Fashion-MNIST (Debian package, when apt is usable)
#   ./install.sh --test   the same plus the test extras (pytest, transformers)
# PyTorch goes first: left to pip's resolver, a range like torch>=2.2 pulls the newest CUDA build
# (several GB). MAELAB_TORCH overrides the tested pair below, e.g. MAELAB_TORCH="torch torchvision".
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"

if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]] && [[ ! -d /usr/share/datasets/fashion-mnist ]]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
    || echo "install.sh: could not install dataset-fashion-mnist; maelab will download Fashion-MNIST instead" >&2
fi

if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  "$PY" -m pip install -q ${MAELAB_TORCH:-"torch==2.14.1" "torchvision==0.29.1"}
fi
"$PY" -m pip install -q -e ".${extras}"
echo "install.sh: maelab installed ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
