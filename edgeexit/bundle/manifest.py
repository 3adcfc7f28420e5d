"""The bundle manifest, v2: a typed schema (pydantic) whose JSON Schema ships in every bundle, so the C++,
Kotlin and Swift runners validate `manifest.json` with the same rules as Python.

Thresholds are finite floats or null (null: the runtime never exits there; the final exit has none), never
infinities. Every path is relative to the bundle root. `checksum` is the sha256 of the manifest's canonical
JSON without the checksum itself: any edit shows (it is a seal against accidents and edits, not a signature).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
SCHEMA_FILE = "manifest.schema.json"
FORMATS = ("onnx", "pte", "engine", "pt2")
Format = Literal["onnx", "pte", "engine", "pt2"]
Precision = Literal["fp32", "fp16", "int8"]
# the runtime family a bundle runs on (edgeexit.runtime.registry: which backends belong to it)
Runtime = Literal["onnxruntime", "executorch", "tensorrt", "torch"]
DType = Literal["float32", "float16", "int8", "int32", "int64", "bool"]
ScoreKind = Literal["max_softmax", "margin", "neg_entropy", "confidence", "gater"]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
RelPath = Annotated[str, Field(min_length=1, max_length=400)]
Name = Annotated[str, Field(max_length=200)]
# Bounds: every number a runner sizes memory or loops by is bounded, so an edited (and re-signed) manifest is a
# clean refusal, never an allocation of 2^50 elements. They are far above any real model.
MAX_BATCH = 4096
MAX_DIM = 1 << 16  # one tensor dimension
MAX_SAMPLE = 1 << 28  # elements of one sample of one tensor (1 GiB of float32)
MAX_EXITS = 64
MAX_CLASSES = 1 << 20
MAX_MACS = 10**15  # per sample: a thousand times a ViT-H
MAX_COUNT = 2**53  # what a double (JavaScript, JSON readers) holds exactly
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Macs = Annotated[int, Field(ge=0, le=MAX_MACS)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
BATCH = -1  # the batch dimension in a tensor shape
REFERENCE_METHOD = "reference"  # the reference's method name inside a multi-method program (.pte)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Model):
    """A named input or output of a segment; `shape` has -1 for the batch dimension."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    shape: list[Annotated[int, Field(ge=BATCH, le=MAX_DIM)]] = Field(max_length=8)
    dtype: DType = "float32"

    @model_validator(mode="after")
    def _dims(self) -> "TensorSpec":
        if any(d < 1 and d != BATCH for d in self.shape):
            raise ValueError(f"shape dims must be >= 1 or -1 (batch), got {self.shape}")
        if math.prod(d for d in self.shape if d != BATCH) > MAX_SAMPLE:
            raise ValueError(f"shape {self.shape} holds more than {MAX_SAMPLE} elements per sample")
        return self

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample (the batch dimension, first, dropped)."""
        return tuple(self.shape[1:])


class SegmentRef(_Model):
    """Where a segment lives in one format: a file, plus the method name inside a multi-method program (.pte)."""

    file: RelPath
    method: Name | None = None


class Probe(_Model):
    """A program the profiler times alone and the exit loop never runs: an exit's head by itself, or the network
    truncated at an exit (the static alternative the report compares against)."""

    segment: dict[Format, SegmentRef] = Field(min_length=1)
    inputs: list[TensorSpec] = Field(min_length=1, max_length=16)
    outputs: list[TensorSpec] = Field(min_length=1, max_length=16)


class Fused(Probe):
    """The batch-1 form of the exit loop as one program (edgeexit.export.fuse_onnx): x and every exit's threshold in,
    the answering exit's logits and index out. onnxruntime runs it for a batch of one; the segments serve the rest."""

    @staticmethod
    def io(input_shape, num_exits: int, num_classes: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """Its inputs and outputs, batch fixed at 1: x [1, C, H, W] and thresholds [E - 1] in, logits [1, classes] and
        exit [1] (int64) out. The one definition: the export writes them, the manifest checks them."""
        return ([TensorSpec(name="x", shape=[1, *input_shape]), TensorSpec(name="thresholds", shape=[num_exits - 1])],
                [TensorSpec(name="logits", shape=[1, num_classes]), TensorSpec(name="exit", shape=[1], dtype="int64")])


class Exit(_Model):
    """One exit: the segment that ends there (in every format the bundle holds), its I/O, cost and rule."""

    index: Annotated[int, Field(ge=0, lt=MAX_EXITS)]
    name: Name
    segment: dict[Format, SegmentRef] = Field(min_length=1)
    inputs: list[TensorSpec] = Field(min_length=1, max_length=16)
    outputs: list[TensorSpec] = Field(min_length=1, max_length=16)
    macs: Macs
    head_macs: Macs
    cumulative_macs: Macs
    params: Count
    head_params: Count
    threshold: Finite | None  # exit when score >= threshold; null: never exits here (and at the final exit)
    score: ScoreKind
    # temperature scaling: the segment's `score` output is computed on logits / temperature, inside the segment, so a
    # runner never applies it again; the `logits` output is unscaled. 1.0 when not scaled (and in older bundles).
    temperature: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = 1.0
    head: Probe | None = None  # features -> (logits, score), the head alone (intermediate exits)
    static: Probe | None = None  # x -> logits: the network truncated here, run alone (intermediate exits)


class Reference(_Model):
    """The unsplit original model (x -> logits): the yardstick of every saving. Its `segment` is empty in a deployable
    bundle (edgeexit.bundle.slim) whose format stores it as a file of its own: the device never runs it, and its I/O
    and MACs stay here for the savings it is the measure of."""

    segment: dict[Format, SegmentRef] = Field(max_length=len(FORMATS))
    inputs: list[TensorSpec] = Field(min_length=1, max_length=16)
    outputs: list[TensorSpec] = Field(min_length=1, max_length=16)
    macs: Macs


class BatchRange(_Model):
    min: Annotated[int, Field(ge=1, le=MAX_BATCH)]
    max: Annotated[int, Field(ge=1, le=MAX_BATCH)]

    @model_validator(mode="after")
    def _order(self) -> "BatchRange":
        if self.min > self.max:
            raise ValueError(f"batch min {self.min} > max {self.max}")
        return self


class InputInfo(_Model):
    """One sample: shape (C, H, W), dtype and layout; pixels in [0, 1] normalised per channel as (x - mean) / std."""

    shape: list[Annotated[int, Field(ge=1, le=MAX_DIM)]] = Field(min_length=3, max_length=3)
    dtype: Literal["float32"] = "float32"
    layout: Literal["NCHW"] = "NCHW"
    mean: list[Finite] = Field(max_length=MAX_DIM)
    std: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(max_length=MAX_DIM)
    # how training resized an image to (H, W): "bilinear" (no antialias: the in-memory datasets, and every bundle
    # written before this field), "bilinear_antialias" (image folders: PIL's resize); edgeexit.images does the same
    resize: Literal["bilinear", "bilinear_antialias"] = "bilinear"


class Ensemble(_Model):
    """AEP's ensemble weights β of the bundle's exits (the runtime's no-early-stop mode)."""

    mode: Name
    weights: list[Finite] = Field(max_length=MAX_EXITS)


class Provenance(_Model):
    """sha256 of what the bundle was made from: the checkpoint (pruned or not) and the calibration."""

    checkpoint: Annotated[str, Field(max_length=4096)]
    checkpoint_sha256: Sha256
    calibration_sha256: Sha256


class Manifest(_Model):
    schema_version: Literal[2]
    edgeexit_version: Name
    format: Format  # what the target runs; the bundle may hold other formats too (`formats`)
    formats: list[Format] = Field(min_length=1, max_length=len(FORMATS))
    precision: Precision
    # the runtime family the target runs the bundle on (TensorRT: once its engines are built on the device), and
    # within it `delegate`: onnxruntime's execution provider, the ExecuTorch delegate, the torch device ("tensorrt"
    # for TensorRT, which has none). Bundles written before `runtime` existed get it from format and delegate.
    runtime: Runtime
    delegate: Name
    batch: BatchRange
    target: Name
    input: InputInfo
    class_names: list[Annotated[str, Field(max_length=1000)]] = Field(min_length=2, max_length=MAX_CLASSES)
    exits: list[Exit] = Field(min_length=1, max_length=MAX_EXITS)
    reference: Reference
    fused: Fused | None = None  # onnxruntime targets with two or more exits; null elsewhere (and in older bundles)
    full_macs: Annotated[int, Field(ge=1, le=MAX_MACS)]
    ensemble: Ensemble | None = None
    model: dict[str, JsonValue]
    data: dict[str, JsonValue]
    files: dict[RelPath, Sha256] = Field(max_length=100_000)
    versions: dict[Name, Annotated[str, Field(max_length=1000)]]
    provenance: Provenance
    checksum: Sha256

    @model_validator(mode="before")
    @classmethod
    def _runtime_of_older_bundles(cls, raw: Any) -> Any:
        """A manifest from before `runtime` (its checksum covers what it holds, checked before this): the family
        from its delegate and format, as edgeexit read them then."""
        if isinstance(raw, dict) and "runtime" not in raw and isinstance(raw.get("format"), str):
            legacy = {"onnx": "onnxruntime", "pte": "executorch", "engine": "tensorrt", "pt2": "torch"}
            family = "tensorrt" if raw.get("delegate") == "tensorrt" else legacy.get(raw["format"])
            if family is not None:
                raw = {**raw, "runtime": family}
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        problems = []
        if self.format not in self.formats:
            problems.append(f"format {self.format} is not among formats {self.formats}")
        for k, e in enumerate(self.exits):
            if e.index != k:
                problems.append(f"exit {k} has index {e.index}")
            missing = [f for f in self.formats if f not in e.segment]
            if missing:
                problems.append(f"exit {k} has no segment in {missing}")
        if self.exits[-1].threshold is not None:
            problems.append("the final exit always answers: its threshold must be null")
        if self.ensemble is not None and len(self.ensemble.weights) != len(self.exits):
            problems.append(f"{len(self.ensemble.weights)} ensemble weights for {len(self.exits)} exits")
        if len(self.input.mean) != self.input.shape[0] or len(self.input.std) != self.input.shape[0]:
            problems.append("input mean/std need one value per channel")
        if self.reference.macs != self.full_macs:
            problems.append("reference.macs differs from full_macs")
        if len(set(self.formats)) != len(self.formats):
            problems.append(f"formats repeat: {self.formats}")
        problems += self._class_count_problems() + self._suffix_problems() + self._reference_problems()
        problems += self._fused_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _class_count_problems(self) -> list[str]:
        """One class name per logit: the final exit's `logits` output (and every other exit's, and the
        reference's) is as wide as `class_names`, so no prediction indexes past the names."""
        problems = []
        named = [(f"exit {e.index}", e.outputs) for e in self.exits] + [("reference", self.reference.outputs)]
        for who, outputs in named:
            logits = [o for o in outputs if o.name == "logits"]
            if not logits:
                if who == f"exit {len(self.exits) - 1}" or who == "reference":
                    problems.append(f"{who} has no `logits` output")
                continue
            width = logits[0].shape[-1] if len(logits[0].shape) >= 2 else None
            if width != len(self.class_names):
                problems.append(f"{who} gives {width} logits for {len(self.class_names)} class_names")
        return problems

    def _reference_problems(self) -> list[str]:
        """The reference ("the full model" of every comparison) has files of its own: no exit or probe file in any
        format, except the one multi-method program (.pte) where it is the method named REFERENCE_METHOD and no
        exit or probe uses that method."""
        used: dict[str, set[str | None]] = {}  # file -> the methods the exits and probes use in it
        for e in self.exits:
            for owner in (e, e.head, e.static):
                if owner is not None:
                    for ref in owner.segment.values():
                        used.setdefault(ref.file, set()).add(ref.method)
        problems = []
        for fmt, ref in self.reference.segment.items():
            if ref.file not in used:
                continue  # a file of its own (and a file of its format: see _suffix_problems)
            if fmt != "pte" or ref.method != REFERENCE_METHOD or REFERENCE_METHOD in used[ref.file]:
                problems.append(f"reference.segment.{fmt} ({ref.file}, method {ref.method}) is a segment of the "
                                f"exits, not the reference's own (a file of its own, or method "
                                f"'{REFERENCE_METHOD}' of the shared .pte)")
        return problems

    def _fused_problems(self) -> list[str]:
        """The batch-1 form runs the whole loop: two exits or more, a file of its own, the I/O of `Fused.io` for this
        manifest's input, exit count and classes (a runner binds its thresholds input from the exit count)."""
        if self.fused is None:
            return []
        if len(self.exits) < 2:
            return ["fused: a bundle of one exit has no batch-1 form (its one segment is one call already)"]
        inputs, outputs = Fused.io(self.input.shape, len(self.exits), len(self.class_names))
        problems = [] if (self.fused.inputs, self.fused.outputs) == (inputs, outputs) else [
            f"fused: inputs/outputs {[t.model_dump() for t in self.fused.inputs + self.fused.outputs]} are not "
            f"{[t.model_dump() for t in inputs + outputs]}"]
        used = {r.file for e in self.exits for o in (e, e.head, e.static) if o is not None for r in o.segment.values()}
        used |= {r.file for r in self.reference.segment.values()}
        problems += [f"fused.segment.{f} ({r.file}) is another program's file" for f, r in self.fused.segment.items()
                     if r.file in used]
        return problems

    def _suffix_problems(self) -> list[str]:
        """Every segment file is a file of its format (`.onnx`, `.pte`, `.engine`, `.pt2`): a segment or the
        reference never names calibration.json, the schema or a vectors file."""
        refs = [(f"reference.segment.{f}", f, r) for f, r in self.reference.segment.items()]
        refs += [(f"fused.segment.{f}", f, r) for f, r in (self.fused.segment.items() if self.fused else [])]
        for e in self.exits:
            for where, owner in (("segment", e), ("head.segment", e.head), ("static.segment", e.static)):
                if owner is not None:
                    refs += [(f"exits.{e.index}.{where}.{f}", f, r) for f, r in owner.segment.items()]
        return [f"{where} names {r.file}, not a .{fmt} file" for where, fmt, r in refs if not r.file.endswith(f".{fmt}")]

    @property
    def thresholds(self) -> list[float | None]:
        return [e.threshold for e in self.exits]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.input.shape)  # type: ignore[return-value]

    @property
    def content_sha256(self) -> str:
        return content_digest(self.model_dump(mode="json"))

    def paths(self) -> list[str]:
        """Every file the manifest refers to (segments in every format, the reference model, the batch-1 form)."""
        refs = [r for e in self.exits for r in e.segment.values()] + list(self.reference.segment.values())
        refs += list(self.fused.segment.values()) if self.fused is not None else []
        return sorted({r.file for r in refs})


def digest(raw: dict[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON (sorted keys, no whitespace) without its `checksum`."""
    body = {k: v for k, v in raw.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()).hexdigest()


REPORTS = "report/"  # attachments (evaluation, profile, report): adding them makes a new version, not a new model


def content_digest(raw: dict[str, Any]) -> str:
    """sha256 of what the bundle runs: its manifest without the checksum and without the report/ attachments. Two
    versions that differ only in their reports have the same content digest, so a profile or an evaluation of one
    holds for the other."""
    body = {k: v for k, v in raw.items() if k != "checksum"}
    body["files"] = {k: v for k, v in body.get("files", {}).items() if not k.startswith(REPORTS)}
    return digest(body)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 7) of manifest.json. Draft 7 because the C++ runner validates with valijson, which
    speaks draft 7, and pydantic's output is valid draft 7 as it stands (`$defs` is reached by plain JSON-pointer
    `$ref`s, no `$ref` has sibling keywords, no 2019+ keyword is used): tests/test_cpp_trust.py checks it with
    jsonschema's Draft7Validator. The C++ runner compiles in its own copy (edgeexit/glue/executorch/schema/), kept equal to
    this by a test; the copy a bundle ships is for readers, never what a runner trusts."""
    schema = Manifest.model_json_schema()
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    schema["$id"] = f"https://edgeexit.dev/schemas/manifest-v{SCHEMA_VERSION}.json"
    return schema
