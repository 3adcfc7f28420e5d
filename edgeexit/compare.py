"""`edgeexit compare`: every backend on the same inputs (the bundle's test vectors plus test-split images), per exit
the largest |Δlogits| against the first backend and against the vectors' expected outputs, with a tolerance per
precision, and how often the exit decisions (which exit answers, and with which class) agree."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

import numpy as np

from edgeexit.bundle import Bundle
from edgeexit.errors import ConfigError, EdgeExitError
from edgeexit.runtime import BACKENDS, EarlyExitRuntime

VECTORS = "vectors.npz"  # inputs [N, C, H, W] and exit{k}_logits / exit{k}_score computed by torch at export
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "int8": 0.25}  # max |Δlogits| per exit
# share of samples whose exit decision must agree: int8 kernels (XNNPACK) and the quantized torch programs' reference
# kernels round differently, which moves a few scores across a threshold (seen: 99.85 % on ResNet-18)
MIN_AGREEMENT = {"fp32": 0.999, "fp16": 0.995, "int8": 0.995}


def write_vectors(path, inputs: np.ndarray, per_exit: list[dict[str, np.ndarray]]) -> None:
    arrays = {"inputs": inputs}
    for k, outs in enumerate(per_exit):
        arrays.update({f"exit{k}_{name}": a for name, a in outs.items()})
    np.savez(path, **arrays)


def read_vectors(bundle: Bundle) -> dict[str, np.ndarray] | None:
    if VECTORS not in bundle.manifest.files:
        return None
    with np.load(bundle.path(VECTORS), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def available_backends(bundle: Bundle) -> list[str]:
    """The backends that can run this bundle here: its formats, and a device where one is needed; the bundle's own
    backend first (the others are compared against it)."""
    names = []
    formats = bundle.manifest.formats
    if "onnx" in formats:
        names.append("onnxruntime")
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            names.append("onnxruntime-cuda")
    if "pte" in formats and importlib.util.find_spec("executorch") is not None:
        names.append("executorch")
    if "pt2" in formats and importlib.util.find_spec("torch") is not None:
        names.append("torch")
        import torch

        if torch.cuda.is_available():
            names.append("torch-cuda")
    if "engine" in formats and any(importlib.util.find_spec(m) is not None for m in ("tensorrt", "tensorrt_rtx")):
        from edgeexit.runtime.trt_device import cuda_device_count

        if cuda_device_count() > 0:  # never open an engine without a CUDA device (TensorRT segfaults)
            names.append("tensorrt")
    from edgeexit.runtime import default_backend

    try:
        own = default_backend(bundle)
    except EdgeExitError:
        return names
    return sorted(names, key=lambda n: n != own)


@dataclass
class Comparison:
    backends: list[str]
    samples: int
    vectors: int
    tolerance: float
    exits: list[dict] = field(default_factory=list)  # per exit: name, max_abs_logits {backend: Δ}, vs_vectors {backend: Δ}
    agreement: dict[str, float] = field(default_factory=dict)  # backend -> share of samples with the same decision
    bundled: dict[str, str | None] = field(default_factory=dict)  # .pte method -> None (its BundledProgram case passed) or why not
    min_agreement: float = MIN_AGREEMENT["fp32"]

    @property
    def passed(self) -> bool:
        deltas = [d for e in self.exits for key in ("max_abs_logits", "vs_vectors") for d in e[key].values()]
        return (all(d <= self.tolerance for d in deltas) and all(a >= self.min_agreement for a in self.agreement.values())
                and all(v is None for v in self.bundled.values()))

    def to_dict(self) -> dict:
        return {"backends": self.backends, "samples": self.samples, "vectors": self.vectors, "tolerance": self.tolerance,
                "min_agreement": self.min_agreement, "exits": self.exits, "agreement": self.agreement,
                "bundled": self.bundled,
                "passed": self.passed}


def compare_backends(bundle: Bundle, backends: list[str] | None = None, *, images: np.ndarray | None = None,
                     tolerance: float | None = None, min_agreement: float | None = None) -> Comparison:
    """Run `backends` (default: every one available here) on the bundle's vectors plus `images`."""
    backends = backends or available_backends(bundle)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise ConfigError("unknown backend to compare", got=unknown or backends, expected=" | ".join(BACKENDS))
    vectors = read_vectors(bundle)
    parts = ([vectors["inputs"]] if vectors is not None else []) + ([images] if images is not None else [])
    if not parts:
        raise ConfigError("nothing to compare on", got="no test vectors in the bundle and no images",
                          expected="vectors.npz or --samples N", hint="pass --samples N to use test-split images")
    x = np.ascontiguousarray(np.concatenate(parts).astype(np.float32, copy=False))
    n_vec = 0 if vectors is None else len(vectors["inputs"])
    tol = tolerance if tolerance is not None else TOLERANCE[bundle.manifest.precision]
    min_agreement = min_agreement if min_agreement is not None else MIN_AGREEMENT[bundle.manifest.precision]
    outs, decisions = {}, {}
    for name in backends:
        try:
            rt = EarlyExitRuntime.open(bundle, name)
        except EdgeExitError as err:
            raise ConfigError(f"backend {name} cannot run this bundle here", got=err.what, hint=err.hint) from err
        outs[name] = rt.exit_outputs(x)
        r = rt.run(x)
        decisions[name] = (r.exit_index, r.predictions)
        rt.close()
    first = backends[0]
    result = Comparison(backends, len(x) - n_vec, n_vec, tol, min_agreement=min_agreement)
    for k, e in enumerate(bundle.exits):
        row = {"index": k, "name": e.name, "max_abs_logits": {}, "vs_vectors": {}}
        for name in backends:
            logits = outs[name][k]["logits"]
            if name != first:
                row["max_abs_logits"][name] = float(np.max(np.abs(logits - outs[first][k]["logits"])))
            if vectors is not None:
                row["vs_vectors"][name] = float(np.max(np.abs(logits[:n_vec] - vectors[f"exit{k}_logits"])))
        result.exits.append(row)
    for name in backends[1:]:
        same = (decisions[name][0] == decisions[first][0]) & (decisions[name][1] == decisions[first][1])
        result.agreement[name] = float(same.mean())
    if "executorch" in backends:
        from edgeexit.export.lower_pte import BUNDLED, verify_bundled
        from edgeexit.export.lower_pte import TOLERANCE as PTE_TOLERANCE

        if BUNDLED in bundle.manifest.files:
            methods = [e.segment["pte"].method for e in bundle.exits] + [bundle.manifest.reference.segment["pte"].method]
            result.bundled = verify_bundled(bundle.path(BUNDLED), methods, PTE_TOLERANCE[bundle.manifest.precision])
    return result
