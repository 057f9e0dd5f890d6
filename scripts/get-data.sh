#!/usr/bin/env bash
# Make Fashion-MNIST available offline: Debian's dataset-fashion-mnist where apt works (as root),
# torchvision's download otherwise. Idempotent.
set -euo pipefail
PY=${PY:-.venv/bin/python}
src=/usr/share/datasets/fashion-mnist
if [ ! -f "$src/train-images-idx3-ubyte.gz" ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "[get-data] installing Debian's dataset-fashion-mnist"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
"$PY" - <<'PY'
from vqtto import data
root = data.data_root()
if data.prepare_fashion_mnist(root):
    print(f"[get-data] Fashion-MNIST ready in {root}")
else:
    print("[get-data] Debian's files are not here; trying torchvision's download")
    data.load("fashion-mnist", "train", limit=1)
    print(f"[get-data] Fashion-MNIST downloaded into {root}")
PY
