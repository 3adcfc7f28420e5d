"""torch backend: the bundle's own `torch.export` programs (`.pt2`), on the CPU or a CUDA device.

It runs the same bundle as every other backend (not a checkpoint), so `edgeexit compare` checks the lowered files
against the programs they were lowered from. On CUDA the features stay on the device: compaction is an
`index_select` there, and only the per-sample exit flags come back to the host.

A `.pt2` archive can hold pickled objects; a bundle is not trusted to be harmless, so before loading one the archive
is checked to hold only tensors, JSON and aten/prims operators, and torch.load is forced to weights_only.
"""

from __future__ import annotations

import json
import os
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgeexit.bundle import TensorSpec
from edgeexit.bundle.manifest import SegmentRef
from edgeexit.errors import BundleError, RuntimeMissingError
from edgeexit.runtime.backend import check_io

SAFE_OP_PREFIXES = ("torch.ops.aten.", "torch.ops.prims.", "torch.ops.quantized_decomposed.", "_operator.")
_UNSAFE_PARTS = ("custom_obj", "opaque_obj")


def _torch():
    try:
        import torch
    except ImportError as err:
        raise RuntimeMissingError("the torch backend needs torch", expected="torch",
                                  hint="pip install torch==2.14.1, or run the bundle with --backend onnxruntime") from err
    return torch


def _targets(obj, found: set[str]) -> set[str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "target" and isinstance(v, str):
                found.add(v)
            else:
                _targets(v, found)
    elif isinstance(obj, list):
        for v in obj:
            _targets(v, found)
    return found


def check_pt2(path: Path) -> None:
    """Refuse a `.pt2` that could run code when loaded: pickled objects, or operators outside aten/prims."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            bad = [n for n in names if any(u in n for u in _UNSAFE_PARTS) or n.endswith(".pkl")]
            configs = [n for n in names if n.endswith("_config.json")]
            for n in configs:
                entries = json.loads(z.read(n)).get("config", {})
                bad += [f"{n}:{k}" for k, v in entries.items() if isinstance(v, dict) and v.get("use_pickle")]
            ops: set[str] = set()
            for n in names:
                if "/models/" in n and n.endswith(".json"):
                    _targets(json.loads(z.read(n)), ops)
    except (zipfile.BadZipFile, ValueError, KeyError) as err:
        raise BundleError(f"{path.name} is not a torch.export archive", got=str(err), expected="a .pt2 file",
                          hint="rebuild the bundle") from err
    odd = sorted(op for op in ops if not op.startswith(SAFE_OP_PREFIXES))
    if bad or odd:
        raise BundleError(f"{path.name} holds content that could run code when loaded", got=(bad + odd)[:5],
                          expected="tensors and aten/prims operators only",
                          hint="edgeexit writes no such archive; rebuild the bundle from its checkpoint")


@contextmanager
def _weights_only():
    old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"  # torch.export.load otherwise falls back to an unrestricted unpickler
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old


def load_program(path: Path):
    """The ExportedProgram in `path`, after `check_pt2`."""
    torch = _torch()
    check_pt2(path)
    with _weights_only():
        try:
            return torch.export.load(str(path))
        except Exception as err:  # torch raises many kinds for a damaged archive
            raise BundleError(f"{path.name} could not be loaded as a torch.export program", got=f"{type(err).__name__}: {err}",
                              expected="a .pt2 written by this edgeexit", hint="rebuild the bundle") from err


class TorchSegment:
    def __init__(self, backend: "TorchBackend", path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]):
        torch = _torch()
        program = load_program(path)
        sig = program.graph_signature
        got_in = [s.arg.name for s in sig.input_specs if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
        if len(got_in) != len(inputs):
            raise BundleError(f"{path.name} takes {len(got_in)} inputs", got=got_in, expected=[i.name for i in inputs],
                              hint="rebuild the bundle")
        meta = [n.meta.get("val") for n in program.graph.nodes if n.op == "output"][0]
        check_io(path, "outputs", outputs, [o.name for o in outputs],
                 [[d if isinstance(d, int) else -1 for d in v.shape] for v in meta])
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        self.module = program.module().to(backend.device)
        self._names = [o.name for o in outputs]
        self._torch = torch

    def run(self, feeds: Mapping[str, object]) -> Mapping[str, object]:
        with self._torch.inference_mode():
            outs = self.module(*(feeds[i.name] for i in self.inputs))
        return dict(zip(self._names, outs))


class TorchBackend:
    """torch on the CPU; arrays are torch tensors (sharing memory with numpy on the way in and out)."""

    name = "torch"
    format = "pt2"
    device_name = "cpu"

    def __init__(self, threads: int | None = None):
        self.torch = _torch()
        self.device = self.torch.device(self.device_name)
        if threads:
            self.torch.set_num_threads(threads)

    def open_segment(self, path: Path, ref: SegmentRef, inputs, outputs, max_batch: int) -> TorchSegment:
        return TorchSegment(self, path, inputs, outputs)

    def upload(self, x: np.ndarray):
        return self.torch.from_numpy(x).to(self.device)

    def download(self, a) -> np.ndarray:
        return a.detach().cpu().numpy()

    def empty(self, shape, dtype: str = "float32"):
        return self.torch.empty(tuple(shape), dtype=getattr(self.torch, dtype), device=self.device)

    def exit_flags(self, score, threshold: float) -> np.ndarray:
        return (score >= threshold).cpu().numpy()

    def _index(self, rows: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(rows, np.int64)).to(self.device, non_blocking=True)

    def gather(self, src, rows: np.ndarray, out):
        view = out[: len(rows)]
        self.torch.index_select(src, 0, self._index(rows), out=view)
        return view

    def scatter(self, dst, slots: np.ndarray | None, src, rows: np.ndarray | None) -> None:
        picked = src if rows is None else src[self._index(rows)]
        if slots is None:
            dst[: len(picked)] = picked
        else:
            dst[self._index(slots)] = picked

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def close(self) -> None:
        pass


class TorchCudaBackend(TorchBackend):
    """The same programs on a CUDA device; compaction on the device, only exit flags come back to the host."""

    name = "torch-cuda"
    device_name = "cuda"

    def __init__(self, threads: int | None = None):
        torch = _torch()
        if not torch.cuda.is_available():
            raise RuntimeMissingError("the torch-cuda backend needs a CUDA device", got="none found",
                                      expected="torch.cuda.is_available()", hint="run on a GPU machine, or use --backend torch")
        super().__init__(threads)
