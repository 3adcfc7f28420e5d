#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: Debian packages (the Fashion-MNIST data; the JDK and Kotlin for the Android
# glue's JVM test; the headers and flatc the ExecuTorch C++ runner builds with; OpenSSH's server for the profiler's SSH
# test), a venv in .venv with edgeexit in editable mode, its build extra (torch, onnx: what trains and exports) and the
# extras below, every package at the exact version of tools/constraints.txt (pyproject.toml gives only ranges), and
# PyPI's cmake. Safe to run again; it skips what is done.
#   tools/setup.sh                          everything the main job and the tests need
#   EXTRAS=dev,pretrained tools/setup.sh    choose the extras besides build (the default below is what the tests need)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS:-dev,pretrained,executorch,trt-check}"
APT_PACKAGES="dataset-fashion-mnist g++ kotlin default-jdk-headless nlohmann-json3-dev libvalijson-dev libflatbuffers-dev flatbuffers-compiler openssh-server openssh-client"

missing=""
for pkg in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian packages:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "[setup] missing Debian packages:$missing, and apt-get is not usable here."
    echo "        hint: as root run 'apt-get update && apt-get install -y$missing'; for the data alone you can"
    echo "        put the four Fashion-MNIST idx .gz files in a folder and set EDGEEXIT_FASHION_MNIST=/that/folder"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.edgeexit-setup
want="$(cat pyproject.toml tools/setup.sh tools/constraints.txt | sha256sum | cut -d' ' -f1) $EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing edgeexit[build,$EXTRAS] at tools/constraints.txt's versions (first run: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # PyPI's cmake (>= 3.28) builds the C++ runner against the executorch wheel's CMake config (Debian's is 3.25)
  .venv/bin/python -m pip install -q -c tools/constraints.txt -e ".[build,$EXTRAS]" "cmake>=3.28,<5"
  echo "$want" > "$stamp"
else
  echo "[setup] .venv up to date"
fi
