"""onnxruntime backend: sessions run through IO binding into buffers the backend owns, one thread pool per process.

Each segment binds its outputs once per batch size into preallocated buffers sized for the bundle's largest batch;
a segment's `features` buffer is the next segment's input as it is (no copy); only compaction copies (`gather`).
The CPU provider is the default; the CUDA provider needs onnxruntime-gpu and is never replaced by the CPU one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgeexit.bundle import TensorSpec
from edgeexit.bundle.manifest import SegmentRef
from edgeexit.errors import RuntimeMissingError
from edgeexit.ort_session import onnxruntime as _onnxruntime
from edgeexit.ort_session import pool_threads, session_options  # noqa: F401 - the runtime's names for them
from edgeexit.runtime.backend import HostArrays, check_io


class OrtSegment:
    """One ONNX graph on one session; outputs land in this segment's own buffers through IO binding."""

    def __init__(self, backend: "OrtBackend", path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                 max_batch: int):
        ort = _onnxruntime()
        self.path = path
        self.session = ort.InferenceSession(str(path), session_options(backend.threads), providers=backend.providers)
        if backend.providers[0] not in self.session.get_providers():
            raise RuntimeMissingError(f"onnxruntime did not enable {backend.providers[0]} for {path.name}",
                                      got=self.session.get_providers(), expected=backend.providers[0],
                                      hint=backend.install_hint)
        got_in, got_out = self.session.get_inputs(), self.session.get_outputs()
        check_io(path, "inputs", inputs, [i.name for i in got_in], [i.shape for i in got_in])
        check_io(path, "outputs", outputs, [o.name for o in got_out], [o.shape for o in got_out])
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        self.max_batch = max_batch
        self._buffers = {o.name: np.empty((max_batch, *o.sample_shape), np.dtype(o.dtype)) for o in outputs}
        self._bound: dict[int, tuple[object, dict[str, np.ndarray]]] = {}  # batch -> (binding, output views)

    def _binding(self, batch: int):
        entry = self._bound.get(batch)
        if entry is None:
            binding = self.session.io_binding()
            views = {}
            for o in self.outputs:
                buf = self._buffers[o.name]
                binding.bind_output(o.name, "cpu", element_type=buf.dtype.type, shape=(batch, *o.sample_shape),
                                    buffer_ptr=buf.ctypes.data)
                views[o.name] = buf[:batch]
            entry = self._bound[batch] = (binding, views)
        return entry

    def run(self, feeds: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        batch = next(iter(feeds.values())).shape[0]
        binding, views = self._binding(batch)
        for spec in self.inputs:
            binding.bind_cpu_input(spec.name, feeds[spec.name])  # ~0.6 µs: the input buffer may be new every call
        self.session.run_with_iobinding(binding)
        return views


class OrtBackend(HostArrays):
    """onnxruntime, CPU execution provider; arrays are host numpy arrays."""

    name = "onnxruntime"
    format = "onnx"
    providers = ["CPUExecutionProvider"]
    install_hint = "onnxruntime's CPU provider is always built in"

    def __init__(self, threads: int | None = None):
        from edgeexit.threads import chosen

        self.threads = threads or chosen()  # the command's --threads unless the caller asks for its own
        self._check_provider()

    def _check_provider(self) -> None:
        available = _onnxruntime().get_available_providers()
        if self.providers[0] not in available:
            raise RuntimeMissingError(f"this onnxruntime has no {self.providers[0]}", got=available,
                                      expected=self.providers[0], hint=self.install_hint)

    def open_segment(self, path: Path, ref: SegmentRef, inputs, outputs, max_batch: int) -> OrtSegment:
        return OrtSegment(self, path, inputs, outputs, max_batch)


class OrtCudaBackend(OrtBackend):
    """onnxruntime's CUDA execution provider (onnxruntime-gpu). Inputs and outputs are bound to host buffers
    (onnxruntime copies them to and from the device); compaction runs on the host."""

    name = "onnxruntime-cuda"
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    install_hint = "install onnxruntime-gpu==1.32.0 in place of onnxruntime, on a machine with an NVIDIA GPU"
