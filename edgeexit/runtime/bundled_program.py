"""The BundledProgram test vectors of an ExecuTorch bundle (`pte/program.bpte`), checked on this device: the bounds
of the flatbuffer first (a truncated file), then every method's bundled case run by ExecuTorch's own reader in a child
process (that reader has no verifier; a crash there must not take the caller down). Runtime side: no torch, nothing
from `edgeexit.export` (which writes these files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from edgeexit.errors import BundleError

BUNDLED = "pte/program.bpte"  # the same lowered methods with test vectors (ExecuTorch's BundledProgram)
# max |pte - module| / (1 + |module|): int8 XNNPACK kernels round differently from the converted module's reference
# kernels, by up to ~2 quantisation steps on the features (0.036 seen on ResNet-18)
TOLERANCE = {"fp32": 1e-4, "int8": 0.1}


def bpte_problem(data: bytes) -> str | None:
    """What makes `data` not a whole BundledProgram flatbuffer, or None: the identifier, then every table, vtable,
    vector and string of bundled_program_schema.fbs (suites, cases, values, tensors, the program) inside the buffer.
    Python's flatbuffers has no verifier (the C++ runner runs flatbuffers' own); this is the bounds part of it, what
    a truncated or cut file breaks, and what ExecuTorch's reader would otherwise read past."""
    import struct

    n = len(data)
    if n < 8 or data[4:8] != b"BP08":
        return f"{n} bytes without the identifier BP08"

    def u32(at: int) -> int:
        if not 0 <= at <= n - 4:
            raise IndexError(at)
        return struct.unpack_from("<I", data, at)[0]

    def table(at: int) -> tuple[int, int]:  # the table at `at`: (its vtable, the vtable's size)
        vt = at - struct.unpack_from("<i", data, at)[0] if 0 <= at <= n - 4 else -1
        if not 0 <= vt <= n - 4:
            raise IndexError(at)
        size = struct.unpack_from("<H", data, vt)[0]
        if size < 4 or vt + size > n:
            raise IndexError(vt)
        return vt, size

    def ref(at: int, field: int) -> int | None:  # where field `field` (an offset field) of the table at `at` points
        vt, size = table(at)
        if 4 + 2 * field + 2 > size:
            return None
        slot = struct.unpack_from("<H", data, vt + 4 + 2 * field)[0]
        return None if slot == 0 else at + slot + u32(at + slot)

    def vector(at: int | None, width: int) -> range:  # the element positions of the vector at `at`
        if at is None:
            return range(0)
        length = u32(at)
        if at + 4 + length * width > n:
            raise IndexError(at)
        return range(at + 4, at + 4 + length * width, width)

    def tables(at: int | None) -> list[int]:  # a vector of tables
        return [p + u32(p) for p in vector(at, 4)]

    try:
        root = u32(0)
        vector(ref(root, 2), 1)  # program
        for suite in tables(ref(root, 1)):
            vector(ref(suite, 0), 1)  # method_name
            for case in tables(ref(suite, 1)):
                for value in tables(ref(case, 0)) + tables(ref(case, 1)):
                    val = ref(value, 1)  # the union's table (field 0 is its type tag)
                    if val is not None:
                        for field, width in ((1, 4), (2, 1), (3, 1)):  # a Tensor's sizes, data, dim_order
                            vector(ref(val, field), width)
    except (IndexError, struct.error):
        return "an offset points outside the file (truncated or damaged)"
    return None


def verify_bundled(path: Path, methods: list[str], tolerance: float) -> dict[str, str | None]:
    """Run each method's bundled test case on ExecuTorch's runtime; per method None (passed) or what failed.

    In a child process: ExecuTorch's BundledProgram reader (`_load_bundled_program_from_buffer`) runs no flatbuffer
    verifier, and a truncated .bpte made it read past its buffer and kill the process (SIGSEGV). A crash of the
    child becomes a BundleError naming the signal; the caller's process never runs that reader."""
    import edgeexit

    problem = bpte_problem(Path(path).read_bytes())
    if problem:
        raise BundleError("the test vectors are not a BundledProgram", got=f"{Path(path).name}: {problem}",
                          expected="a flatbuffer with identifier BP08, whole",
                          hint="the file is damaged; re-export the bundle")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(edgeexit.__file__).resolve().parents[1]),
                                                        *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd = [sys.executable, "-c", "from edgeexit.runtime.bundled_program import _verify_bundled_child; _verify_bundled_child()",
           str(path), json.dumps(methods), repr(float(tolerance))]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
    except subprocess.TimeoutExpired as err:
        raise BundleError("ExecuTorch did not finish reading the test vectors", got=f"{path.name}: over 900 s",
                          expected="a few seconds", hint="the .bpte is damaged; rebuild the bundle") from err
    if res.returncode < 0:
        raise BundleError("ExecuTorch crashed reading the test vectors", got=f"{path.name}: killed by "
                          f"{signal.Signals(-res.returncode).name}", expected="a BundledProgram edgeexit wrote",
                          hint="the .bpte is damaged or was not written by edgeexit; rebuild the bundle")
    lines = res.stdout.strip().splitlines()
    if res.returncode != 0 or not lines:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise BundleError("ExecuTorch cannot read the test vectors", got=f"{path.name}: {tail}",
                          expected="a BundledProgram edgeexit wrote", hint="rebuild the bundle")
    return json.loads(lines[-1])


def _verify_bundled_child() -> None:
    """The child of verify_bundled: argv = path, methods (JSON), tolerance; prints the result as JSON."""
    from executorch.extension.pybindings.portable_lib import (
        _load_bundled_program_from_buffer,
    )

    path, methods, tolerance = Path(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3])
    try:
        bundle = _load_bundled_program_from_buffer(path.read_bytes())
    except (RuntimeError, ValueError) as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
    result: dict[str, str | None] = {}
    for method in methods:
        try:
            bundle.verify_result_with_bundled_expected_output(method, 0, tolerance, tolerance)
            result[method] = None
        except RuntimeError as err:
            result[method] = str(err)
    print(json.dumps(result))
