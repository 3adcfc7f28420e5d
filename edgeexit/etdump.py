"""Per-segment and per-operator times of an ExecuTorch bundle from ETDump: ExecuTorch's own event trace, read with the
devtools Inspector. The Inspector with an ETRecord handles only a method named `forward`, and without one it merges
the runs of methods whose events look alike (seg1 and seg2 of a ResNet); so each method is traced by a program loaded
for it alone, on the input the chain gives it.

    Method::execute   the whole method (the segment's time)
    <XNNPACK op> #i   each delegated operator; native_call_* for the few operators outside the delegate
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgeexit.bundle import Bundle
from edgeexit.errors import ConfigError, RuntimeMissingError

TOP_OPERATORS = 10
_SKIP = ("Method::", "Program::", "OPERATOR_CALL", "DELEGATE_CALL")


def etdump_timings(bundle: Bundle, *, batch: int = 1, runs: int = 20, seed: int = 0) -> dict:
    """Run every segment method (and the reference) `runs` times on a random batch with ETDump on; per method the
    median and p90 of Method::execute in ms, and its slowest operators (median ms)."""
    if "pte" not in bundle.manifest.formats:
        raise ConfigError("ETDump timings need an ExecuTorch bundle", got=bundle.manifest.formats, expected="pte",
                          hint="export with --target android or ios")
    try:
        import torch
        from executorch.devtools import Inspector
        from executorch.extension.pybindings.portable_lib import _load_for_executorch
    except ImportError as err:
        raise RuntimeMissingError("ETDump needs ExecuTorch's devtools", expected="executorch==1.5.1",
                                  hint="pip install -e '.[executorch]'") from err
    refs = [e.segment["pte"] for e in bundle.exits] + [bundle.manifest.reference.segment["pte"]]
    files = {r.file for r in refs}
    if len(files) != 1:
        raise ConfigError("ETDump timings read one multi-method program", got=sorted(files), expected="one .pte")
    program = str(bundle.path(files.pop()))
    methods = [r.method for r in refs]
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((batch, *bundle.input_shape)).astype(np.float32))
    plain = _load_for_executorch(program)
    feeds, cur = {}, x
    for method in methods[:-1]:
        feeds[method] = cur
        cur = plain.run_method(method, [cur])[0]
    feeds[methods[-1]] = x  # the reference takes the images
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            traced = _load_for_executorch(program, enable_etdump=True, debug_buffer_size=0)
            for _ in range(runs):
                traced.run_method(method, [feeds[method]])
            path = Path(tmp) / f"{method}.etdp"
            traced.write_etdump_result_to_file(str(path))
            block = next(b for b in Inspector(etdump_path=str(path)).event_blocks if b.name == "Execute")
            total = next(e for e in block.events if e.name == "Method::execute").perf_data.raw
            ops = [(e.name, float(np.median(e.perf_data.raw))) for e in block.events
                   if e.perf_data is not None and not e.name.startswith(_SKIP)]
            ops.sort(key=lambda t: -t[1])
            out.append({"method": method, "ms": float(np.median(total)), "p90_ms": float(np.percentile(total, 90)),
                        "operators": [{"name": n, "ms": ms} for n, ms in ops[:TOP_OPERATORS]],
                        "operator_count": len(ops)})
    return {"batch_size": batch, "runs": runs, "methods": out}
