"""`edgeexit compare`: every backend on the same inputs (the bundle's test vectors plus test-split images), per exit
the largest |Δlogits| against the first backend and against the vectors' expected outputs, with a tolerance per
precision, and how often the exit decisions (which exit answers, and with which class) agree."""

from __future__ import annotations

import tokenize
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeexit.bundle import Bundle
from edgeexit.errors import BundleError, ConfigError, EdgeExitError
from edgeexit.runtime import EarlyExitRuntime, registry

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


MAX_VECTORS = 4096  # the export writes 8; a header that asks for more is not a test vector file
HEADER_BYTES = 4096


def read_vectors(bundle: Bundle) -> dict[str, np.ndarray] | None:
    """The bundle's test vectors (None when it ships none), checked against its manifest: see `load_vectors`."""
    if VECTORS not in bundle.manifest.files:
        return None
    return load_vectors(bundle.path(VECTORS), bundle.input_shape, len(bundle.manifest.class_names), len(bundle.exits))


def load_vectors(path: Path, input_shape: Sequence[int], num_classes: int, num_exits: int) -> dict[str, np.ndarray]:
    """inputs [N, *input_shape] and exit{k}_logits [N, C] / exit{k}_score [N], all float32 and finite, nothing else.

    Never unpickles (object arrays are refused by their header), and checks every array's header (dtype, shape)
    before its data is read, so a header that asks for 2^50 floats costs nothing. Anything else: a BundleError."""
    want = {"inputs": ("inputs", None)}
    for k in range(num_exits):
        want[f"exit{k}_logits"] = ("logits", (num_classes,))
        want[f"exit{k}_score"] = ("score", ())
    out: dict[str, np.ndarray] = {}
    n = None
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            keys = [m[:-4] for m in names if m.endswith(".npy")]
            if len(keys) != len(names) or sorted(keys) != sorted(want):
                raise _bad(path, "it holds other arrays than the manifest's exits call for", sorted(names),
                           sorted(f"{k}.npy" for k in want))
            for key in ["inputs"] + [k for k in want if k != "inputs"]:
                with z.open(f"{key}.npy") as f:
                    fmt = np.lib.format
                    read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(
                        fmt.read_magic(f))
                    if read_header is None:
                        raise _bad(path, f"array {key} has an unknown .npy version", key, ".npy version 1.0 or 2.0")
                    shape, _, dtype = read_header(f, max_header_size=HEADER_BYTES)
                    tail = tuple(input_shape) if key == "inputs" else want[key][1]
                    if n is None:
                        n = shape[0] if len(shape) >= 1 else 0
                    expected = (n, *tail)
                    if dtype != np.dtype("<f4") or tuple(shape) != expected or not 1 <= n <= MAX_VECTORS:
                        raise _bad(path, f"array {key} is not what the manifest says",
                                   f"{dtype} {tuple(shape)}", f"float32 {expected}, 1 <= N <= {MAX_VECTORS}")
                with z.open(f"{key}.npy") as f:  # the header is sound: now its data, never a pickle
                    a = np.lib.format.read_array(f, allow_pickle=False, max_header_size=HEADER_BYTES)
                if not np.isfinite(a).all():
                    raise _bad(path, f"array {key} holds NaN or inf", "non-finite values", "finite values")
                out[key] = np.ascontiguousarray(a)
    except BundleError:
        raise
    # what numpy's and zipfile's parsers raise on damaged bytes (numpy's header parser tokenizes Python literals)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, RuntimeError,
            TypeError, SyntaxError, tokenize.TokenError) as err:
        raise _bad(path, "it cannot be read as an .npz of arrays", f"{type(err).__name__}: {str(err)[:160]}",
                   "numpy's .npz of float32 arrays") from None
    return out


def _bad(path: Path, why: str, got: object, expected: object) -> BundleError:
    return BundleError(f"{Path(path).name}: {why}", got=got, expected=expected,
                       hint="the bundle's test vectors are damaged; export the bundle again")


def available_backends(bundle: Bundle) -> list[str]:
    """The backends that can run this bundle here: its formats, and a device where one is needed; the bundle's own
    backend first (the others are compared against it)."""
    return registry.available_backends(bundle.manifest)


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
    unknown = [b for b in backends if b not in registry.REGISTRY]
    if unknown or not backends:
        raise ConfigError("unknown backend to compare", got=unknown or backends, expected=" | ".join(registry.REGISTRY))
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
    if any(registry.REGISTRY[name].format == "pte" for name in backends):  # its programs carry their own cases
        from edgeexit.export.lower_pte import BUNDLED, verify_bundled
        from edgeexit.export.lower_pte import TOLERANCE as PTE_TOLERANCE

        if BUNDLED in bundle.manifest.files:
            methods = [e.segment["pte"].method for e in bundle.exits] + [bundle.manifest.reference.segment["pte"].method]
            result.bundled = verify_bundled(bundle.path(BUNDLED), methods, PTE_TOLERANCE[bundle.manifest.precision])
    return result
