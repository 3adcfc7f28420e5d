"""Lowering to ExecuTorch: every program as one method of a single `.pte` (identical weights are stored once), each
delegated to XNNPACK, with a dynamic batch; checked against torch with ExecuTorch's own runtime.

Method inputs and outputs are not memory-planned (`alloc_graph_input=False, alloc_graph_output=False`): the caller
binds its own buffers, so one method's output buffer is the next method's input without a copy (the C++ runner does).
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import torch

from edgeexit.bundle import SegmentRef
from edgeexit.errors import ExportError, RuntimeMissingError
from edgeexit.export.lower_onnx import max_error
from edgeexit.export.split import Program, chain_outputs
from edgeexit.runtime.bundled_program import BUNDLED, TOLERANCE

FORMAT = "pte"
PRECISIONS = ("fp32", "int8")
FILE = "pte/program.pte"


def _executorch():
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
            XnnpackPartitioner,
        )
        from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
        from executorch.exir.passes import MemoryPlanningPass
    except ImportError as err:
        raise RuntimeMissingError("ExecuTorch is not installed", expected="executorch==1.5.1",
                                  hint="pip install -e '.[executorch]'") from err
    return XnnpackPartitioner, ExecutorchBackendConfig, to_edge_transform_and_lower, MemoryPlanningPass


@contextlib.contextmanager
def no_mkldnn():
    """XNNPACK lowering with mkldnn / nnpack enabled silently breaks a dynamic batch above ~16 (PLATFORM.md)."""
    with torch.backends.mkldnn.flags(enabled=False), torch.backends.nnpack.flags(enabled=False):
        yield


def lower_programs(programs: list[Program], root: Path, *, precision: str = "fp32", **_) -> dict[str, SegmentRef]:
    """pte/program.pte with one XNNPACK-delegated method per program, checked against torch. For int8 the programs
    must already be quantized (`edgeexit.export.quantize.quantize_programs`)."""
    XnnpackPartitioner, Config, lower, MemoryPlanningPass = _executorch()
    path = Path(root) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with no_mkldnn():
        try:
            edge = lower({p.name: p.program for p in programs}, partitioner=[XnnpackPartitioner()])
            edge_copy = copy.deepcopy(edge)  # to_executorch consumes the edge program; the bundled copy needs its own
            et = edge.to_executorch(Config(memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False,
                                                                                   alloc_graph_output=False)))
        except Exception as err:  # ExecuTorch raises many kinds for an op it cannot lower
            raise ExportError("ExecuTorch could not lower the programs", got=f"{type(err).__name__}: {str(err)[:300]}",
                              expected="aten ops XNNPACK or the portable kernels take",
                              hint="export --target cpu (ONNX) works for every backbone") from err
        # The device's check of itself: the same methods with memory-planned I/O (BundledProgram's verification
        # loads its inputs into planned buffers, and crashes on unplanned ones in 1.5.1) and one test case each.
        planned = edge_copy.to_executorch(Config())
    path.write_bytes(et.buffer)
    check_pte(programs, path, tolerance=TOLERANCE[precision])
    write_bundled(planned, programs, Path(root) / BUNDLED)
    return {p.name: SegmentRef(file=FILE, method=p.name) for p in programs}


def write_bundled(planned, programs: list[Program], path: Path, *, seed: int = 1) -> None:
    """A BundledProgram with one MethodTestSuite per method: a seeded batch of 2 chained through the segments (the
    reference takes the images), expected outputs from the eager modules."""
    from executorch.devtools import BundledProgram
    from executorch.devtools.bundled_program.config import (
        MethodTestCase,
        MethodTestSuite,
    )
    from executorch.devtools.bundled_program.serialize import (
        serialize_from_bundled_program_to_flatbuffer,
    )

    x = torch.randn((2, *programs[0].example.shape[1:]), generator=torch.Generator().manual_seed(seed))
    suites = [MethodTestSuite(method_name=p.name, test_cases=[MethodTestCase(inputs=[feed], expected_outputs=list(outs.values()))])
              for p, (feed, outs) in zip(programs, chain_outputs(programs, x))]
    path.write_bytes(serialize_from_bundled_program_to_flatbuffer(BundledProgram(planned, suites)))


def check_pte(programs: list[Program], path: Path, *, tolerance: float = TOLERANCE["fp32"], seed: int = 0) -> float:
    """Every method on ExecuTorch's runtime at batch 1 and 3 against the eager module; raise beyond `tolerance`."""
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(str(path))
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for p in programs:
        method = program.load_method(p.name)
        ex = p.example
        for batch in (1, 3) if ex.shape[0] > 1 else (1,):
            x = torch.randn((batch, *ex.shape[1:]), generator=gen) * ex.std().clamp_min(1e-3) + ex.mean()
            with torch.no_grad():
                want = [t.numpy() for t in p.module(x)]
            got = [t.numpy() for t in method.execute([x])]
            worst = max(worst, max_error(path, p, want, got))
    if worst > tolerance:
        raise ExportError(f"ExecuTorch disagrees with torch on {path.name}", got=f"max error {worst:.2e}",
                          expected=f"<= {tolerance:.0e}", hint="an XNNPACK kernel may differ; report the backbone")
    return worst
