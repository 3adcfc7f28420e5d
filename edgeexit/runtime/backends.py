"""One small interface for every runtime: `load(path, ...)` gives a segment runner whose `run(x)` returns the
segment's outputs as numpy arrays. Optional runtimes are imported only inside the backend that needs them."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
from torch import nn

from edgeexit.errors import ConfigError


class SegmentRunner(Protocol):
    def run(self, x: np.ndarray) -> Sequence[np.ndarray]:
        """Outputs of one segment for a float32 batch: (features, logits, score), or (logits, score) at the last."""


def ort_session_options(threads: int | None = None, spinning: bool = False):
    """Session options shared by every session of one runtime (and by the unsplit reference it is compared to).

    Spinning is off by default: a chain of sessions each with its own spinning thread pool steals the two
    cores from the session that runs next.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return so


MAX_CACHED_BINDINGS = 128


class OrtSegment:
    """An onnxruntime session run through IO binding into buffers this object owns.

    Outputs land directly in preallocated numpy buffers (grown to the largest batch seen), so a segment's
    features are handed to the next segment without a copy; only compaction copies.
    """

    def __init__(self, path: Path, output_shapes: Sequence[Sequence[int]], *, threads: int | None = None,
                 spinning: bool = False, providers: Sequence[str] = ("CPUExecutionProvider",)):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), ort_session_options(threads, spinning), providers=list(providers))
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        if len(output_shapes) != len(self.output_names):
            raise ConfigError(f"{path} has {len(self.output_names)} outputs", got=self.output_names,
                              expected=f"{len(output_shapes)} outputs", hint="the manifest and the segment file disagree")
        self.output_shapes = [tuple(s) for s in output_shapes]
        self._capacity = 0
        self._buffers: list[np.ndarray] = []
        self._bindings: dict[int, object] = {}

    def _binding(self, batch: int):
        binding = self._bindings.get(batch)
        if binding is not None:
            return binding
        if batch > self._capacity:
            self._capacity = max(batch, 2 * self._capacity)
            self._buffers = [np.empty((self._capacity, *s), np.float32) for s in self.output_shapes]
            self._bindings.clear()
        if len(self._bindings) >= MAX_CACHED_BINDINGS:  # compaction makes every live-batch size; keep the set small
            self._bindings.clear()
        binding = self.session.io_binding()
        for name, buf, shape in zip(self.output_names, self._buffers, self.output_shapes):
            binding.bind_output(name, "cpu", element_type=np.float32, shape=(batch, *shape), buffer_ptr=buf.ctypes.data)
        self._bindings[batch] = binding
        return binding

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        batch = x.shape[0]
        binding = self._binding(batch)
        binding.bind_cpu_input(self.input_name, x)
        self.session.run_with_iobinding(binding)
        return [buf[:batch] for buf in self._buffers]


class OrtModel:
    """A whole graph (the unsplit reference) with plain `session.run`, under the same session options."""

    def __init__(self, path: Path, *, threads: int | None = None, spinning: bool = False):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), ort_session_options(threads, spinning), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: x})


class TorchSegment:
    """The reference backend: the segment's nn.Module in eval mode."""

    def __init__(self, module: nn.Module):
        self.module = module.eval()

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return [t.numpy() for t in self.module(torch.from_numpy(x))]


BACKENDS = ("onnxruntime", "torch")
