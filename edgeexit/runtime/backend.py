"""The one contract every runtime fits (onnxruntime, torch `.pt2`, ExecuTorch, TensorRT).

A **segment** has named inputs and outputs (`TensorSpec`s from the manifest, checked against the file itself);
`run(feeds)` writes its outputs into buffers the backend owns and returns them by name; they stay valid until the
segment's next run. A **backend** opens segments, moves arrays between the host and its device, and does the exit
loop's compaction on its device: `exit_flags` (the only thing that comes back to the host), `gather` (the samples
still running, into a buffer it owns) and `scatter` (exiting logits into their output slots).

Arrays are whatever the backend uses (numpy on the host, torch tensors on a GPU); the exit loop never looks inside
one. Optional runtimes are imported inside their backend module only, so running an ONNX bundle never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from edgeexit.bundle import Bundle, TensorSpec
from edgeexit.bundle.manifest import Format, SegmentRef
from edgeexit.errors import BundleError
from edgeexit.runtime import registry
from edgeexit.runtime.registry import REGISTRY

Array = Any  # a backend's array type


class Segment(Protocol):
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def run(self, feeds: Mapping[str, Array]) -> Mapping[str, Array]:
        """Run on a batch; outputs by name, in buffers this segment owns (valid until its next run)."""


class Backend(Protocol):
    name: str
    format: Format  # the segment format this backend runs

    def open_segment(self, path: Path, ref: SegmentRef, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                     max_batch: int) -> Segment: ...

    def upload(self, x: np.ndarray) -> Array:
        """A host float32 batch as this backend's array (no copy where the device is the host)."""

    def download(self, a: Array) -> np.ndarray: ...

    def empty(self, shape: Sequence[int], dtype: str = "float32") -> Array: ...

    def exit_flags(self, score: Array, threshold: float) -> np.ndarray:
        """Host bool [n]: score >= threshold, computed on the device."""

    def gather(self, src: Array, rows: np.ndarray, out: Array) -> Array:
        """out[:len(rows)] = src[rows]; returns that view (the next segment's input)."""

    def scatter(self, dst: Array, slots: np.ndarray | None, src: Array, rows: np.ndarray | None) -> None:
        """dst[slots] = src[rows]; slots None: the first len(src) rows in order; rows None: all of src."""

    def synchronize(self) -> None: ...

    def close(self) -> None: ...


class HostArrays:
    """The array half of the contract for a runtime that runs on the host's CPU: arrays are numpy arrays, uploads and
    downloads are the arrays themselves, compaction is numpy indexing (onnxruntime's CPU provider, ExecuTorch)."""

    def upload(self, x: np.ndarray) -> np.ndarray:
        return x

    def download(self, a: np.ndarray) -> np.ndarray:
        return a

    def empty(self, shape: Sequence[int], dtype: str = "float32") -> np.ndarray:
        return np.empty(tuple(shape), np.dtype(dtype))

    def exit_flags(self, score: np.ndarray, threshold: float) -> np.ndarray:
        return score >= threshold

    def gather(self, src: np.ndarray, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        view = out[: len(rows)]
        np.take(src, rows, axis=0, out=view)
        return view

    def scatter(self, dst: np.ndarray, slots: np.ndarray | None, src: np.ndarray, rows: np.ndarray | None) -> None:
        picked = src if rows is None else src[rows]
        if slots is None:
            dst[: len(picked)] = picked
        else:
            dst[slots] = picked

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        pass


# name -> (module, class): imported only when asked for (the registry's table, kept for older callers)
BACKENDS: dict[str, tuple[str, str]] = {name: (s.module, s.cls) for name, s in REGISTRY.items()}


def default_backend(bundle: Bundle) -> str:
    """The backend the bundle's target runs on (its manifest's runtime and delegate): see the registry."""
    return registry.default_backend(bundle.manifest)


def make_backend(name: str, **options) -> Backend:
    """A backend by name; a missing optional runtime raises RuntimeMissingError inside the backend."""
    return registry.make_backend(name, **options)


def segment_file(bundle: Bundle, segment: Mapping[str, SegmentRef], fmt: str, what: str) -> tuple[Path, SegmentRef]:
    ref = segment.get(fmt)
    if ref is None:
        raise BundleError(f"the bundle holds no {fmt} file for {what}", got=sorted(segment),
                          expected=fmt, hint=f"export with a target that writes {fmt}, or pick a backend for "
                          f"{', '.join(sorted(segment))}")
    return bundle.path(ref.file), ref


def check_io(path: Path, what: str, want: Sequence[TensorSpec], got_names: Sequence[str],
             got_shapes: Sequence[Sequence[Any]]) -> None:
    """The file's own I/O must be the manifest's: same names in order, same static dims."""
    names = [t.name for t in want]
    if list(got_names) != names:
        raise BundleError(f"{path.name}: its {what} differ from the manifest", got=list(got_names), expected=names,
                          hint="the manifest and the segment file disagree; rebuild the bundle")
    for spec, shape in zip(want, got_shapes):
        static = [d if isinstance(d, int) and d > 0 else -1 for d in shape]
        if len(static) != len(spec.shape) or any(s != -1 and w != -1 and s != w for s, w in zip(static, spec.shape)):
            raise BundleError(f"{path.name}: {what[:-1]} {spec.name} has another shape than the manifest says",
                              got=list(shape), expected=spec.shape, hint="rebuild the bundle")
