"""Which TensorRT and which CUDA device this process has: the TensorRT module (NVIDIA TensorRT or TensorRT-RTX),
the CUDA device count and properties through cuda-python, and the Jetson Linux (L4T) release.

Runtime side: imported by the tensorrt backend on the device and by the engine build stage; needs neither torch
nor anything from `edgeexit.export`.

Never create a TensorRT Runtime (or deserialise an engine) without a CUDA device: it segfaults.
`require_cuda_device` asks cuda-python first and raises `RuntimeMissingError` instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgeexit.errors import ConfigError, RuntimeMissingError

FLAVOURS = ("tensorrt", "tensorrt_rtx")
FLAVOUR_ENV = "EDGEEXIT_TENSORRT"  # force one flavour (tensorrt | tensorrt_rtx)
TEGRA_RELEASE = Path("/etc/nv_tegra_release")


def tensorrt(flavour: str | None = None):
    """(module, flavour): NVIDIA TensorRT if importable, else TensorRT-RTX; `flavour` or $EDGEEXIT_TENSORRT picks one."""
    want = flavour or os.environ.get(FLAVOUR_ENV) or None
    if want is not None and want not in FLAVOURS:
        raise ConfigError("unknown TensorRT flavour", got=want, expected=" | ".join(FLAVOURS))
    tried = []
    for name in (want,) if want else FLAVOURS:
        try:
            return __import__(name), name
        except Exception as err:  # PyPI's `tensorrt` stub raises more than ImportError when its libraries are absent
            tried.append(f"{name}: {type(err).__name__}")
    raise RuntimeMissingError("TensorRT is not installed", got="; ".join(tried), expected=" or ".join(want and [want] or FLAVOURS),
                              hint="on a Jetson it comes with JetPack (python3-libnvinfer); on a desktop GPU "
                              "pip install -e '.[tensorrt]'; to check ONNX segments without a GPU pip install -e '.[trt-check]'")


def version_of(trt) -> str:
    return str(trt.__version__)


def flavour_of(trt) -> str:
    """The flavour name of an imported TensorRT module."""
    return "tensorrt_rtx" if trt.__name__.startswith("tensorrt_rtx") else "tensorrt"


def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as err:
        raise RuntimeMissingError("TensorRT on a GPU needs cuda-python", got="no cuda.bindings", expected="cuda-python",
                                  hint="pip install -e '.[tensorrt]' (or '.[jetson]' on a Jetson)") from err
    return cudart


def cuda_device_count() -> int:
    """CUDA devices visible to this process; 0 without cuda-python, a driver or a GPU (never raises for their absence)."""
    try:
        cudart = _cudart()
    except RuntimeMissingError:
        return 0
    err, count = cudart.cudaGetDeviceCount()
    return int(count) if err == cudart.cudaError_t.cudaSuccess and count else 0


def require_cuda_device(what: str = "TensorRT") -> int:
    """The device count, or RuntimeMissingError when there is none: call this before creating a TensorRT Runtime
    or deserialising an engine (both segfault without a device)."""
    cudart = _cudart()
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or not count:
        raise RuntimeMissingError(f"{what} needs a CUDA device", got=f"cudaGetDeviceCount: {getattr(err, 'name', err)}, "
                                  f"{count or 0} device(s)", expected="an NVIDIA GPU with its driver",
                                  hint="run on the Jetson or GPU machine; here, run the ONNX segments with "
                                  "--backend onnxruntime (CPU emulation)")
    return int(count)


def l4t_release(path: Path = TEGRA_RELEASE) -> str | None:
    """The Jetson Linux (L4T) release, e.g. "36.4.0", from /etc/nv_tegra_release; None off a Jetson."""
    try:
        first = Path(path).read_text().splitlines()[0]  # "# R36 (release), REVISION: 4.0, GCID: ..., BOARD: ..."
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    try:
        major = first.split("R", 1)[1].split()[0]
        revision = first.split("REVISION:", 1)[1].split(",")[0].strip()
    except IndexError:
        return None
    return f"{major}.{revision}"


@dataclass(frozen=True)
class Device:
    """What an engine is specific to: the GPU (name, compute capability "8.7") and, on Jetson, the L4T release."""

    gpu: str | None
    compute_capability: str | None
    l4t: str | None = None


def current_device(index: int = 0) -> Device:
    """The CUDA device `index` of this process (RuntimeMissingError without one)."""
    require_cuda_device()
    cudart = _cudart()
    err, prop = cudart.cudaGetDeviceProperties(index)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeMissingError(f"cannot read the properties of CUDA device {index}", got=getattr(err, "name", err),
                                  hint="check CUDA_VISIBLE_DEVICES and the driver")
    name = prop.name.split(b"\0", 1)[0].decode() if isinstance(prop.name, bytes) else str(prop.name)
    return Device(gpu=name, compute_capability=f"{prop.major}.{prop.minor}", l4t=l4t_release())


def this_machine() -> Device:
    """The current CUDA device, or (no GPU here) only the L4T release: what a CPU-only build records."""
    return current_device() if cuda_device_count() else Device(None, None, l4t_release())
