"""engine/engines.json, the record of what a bundle's TensorRT engines were built for: the TensorRT flavour and
version, the GPU, its compute capabilities and (on Jetson) the L4T release; per engine its source ONNX and profile.

`edgeexit engines` writes it with the engines (`builder_record`); the tensorrt backend reads it (`read_record`) and
compares it with the device (`check_engine`) before anything is deserialised: a foreign engine is undefined
behaviour. Runtime side: no torch, nothing from `edgeexit.export`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeexit.errors import BundleError
from edgeexit.runtime.trt_device import Device, this_machine, version_of

DIR = "engine"
METADATA = f"{DIR}/engines.json"
REBUILD_HINT = "rebuild the engines on this device: edgeexit engines RUN/bundle"

Text = Annotated[str, Field(max_length=200)]


class Builder(BaseModel):
    """What the engines of one build are specific to (engines.json's `builder`)."""

    model_config = ConfigDict(extra="forbid")

    flavour: Text
    version: Text
    gpu: Text | None = None
    compute_capabilities: list[Text] = Field(max_length=16)
    l4t: Text | None = None
    precision: Text | None = None
    cpu_only: bool = False
    tool: Text | None = None  # "python builder" | "trtexec"


class EngineEntry(BaseModel):
    """One engine: its file, the ONNX it was built from, its input and optimisation profile (min/opt/max shapes)."""

    model_config = ConfigDict(extra="forbid")

    file: Text
    onnx: Text
    input: Text
    profile: dict[Text, list[int]]
    fp16: Text | None = None  # "builder flag" | "fp16 weights" | None (fp32, int8)


class EngineRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    builder: Builder
    engines: dict[Text, EngineEntry]


class EngineMismatchError(BundleError):
    """An engine was built for another device, TensorRT version or L4T release than this one."""


def builder_record(trt, flavour: str, precision: str, compute_capabilities: list[str], tool: str | None = None) -> Builder:
    """The record of a build on this machine (a CPU-only build records no GPU)."""
    device = this_machine()
    return Builder(flavour=flavour, version=version_of(trt), gpu=device.gpu, compute_capabilities=compute_capabilities,
                   l4t=device.l4t, precision=precision, cpu_only=device.gpu is None, tool=tool)


def read_record(engine_path: Path) -> EngineRecord:
    """engines.json beside an engine file (part of the verified bundle), typed; BundleError when it is not one."""
    meta = Path(engine_path).parent / Path(METADATA).name
    try:
        return EngineRecord.model_validate(json.loads(meta.read_text()))
    except (OSError, ValueError) as err:  # ValidationError and JSONDecodeError are ValueErrors
        problem = f"{err.error_count()} problem(s)" if isinstance(err, ValidationError) else type(err).__name__
        raise BundleError(f"no readable {Path(METADATA).name} beside {Path(engine_path).name}", got=problem,
                          expected=f"{METADATA} as `edgeexit engines` writes it", hint=REBUILD_HINT) from None


def check_engine(builder: Builder | Mapping, device: Device, *, flavour: str, version: str) -> None:
    """Refuse an engine built by another TensorRT, for another GPU or another L4T release than `device` and the
    TensorRT that would load it (before any deserialisation: a foreign engine is undefined behaviour)."""
    if not isinstance(builder, Builder):
        try:
            builder = Builder.model_validate(builder)
        except ValidationError as err:
            raise BundleError("the engine record's builder is malformed", got=f"{err.error_count()} problem(s)",
                              expected=f"the builder record of {METADATA}", hint=REBUILD_HINT) from None
    problems = []
    if builder.flavour != flavour or builder.version != version:
        problems.append(f"built with {builder.flavour} {builder.version}, this is {flavour} {version}")
    caps = builder.compute_capabilities
    if device.compute_capability not in caps:
        problems.append(f"built for compute capability {', '.join(caps) or '?'}, this GPU is {device.compute_capability}")
    if flavour == "tensorrt" and builder.gpu and builder.gpu != device.gpu:
        problems.append(f"built on {builder.gpu}, this GPU is {device.gpu}")  # TensorRT engines are per GPU model
    if builder.l4t != device.l4t and (builder.l4t or device.l4t):
        problems.append(f"built on L4T {builder.l4t or 'none'}, this is L4T {device.l4t or 'none'}")
    if problems:
        raise EngineMismatchError("the TensorRT engines were built for another device or version", got="; ".join(problems),
                                  expected=f"{flavour} {version} on {device.gpu} (compute capability "
                                  f"{device.compute_capability}{', L4T ' + device.l4t if device.l4t else ''})",
                                  hint=REBUILD_HINT)
