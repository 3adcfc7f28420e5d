"""The C++ runner verifies what Python verifies, in the same order, and a hostile bundle gives an error code, never
a crash (issue 16, item 4; issue 17, item 4):

- the manifest's checksum, recomputed by the runner exactly as Python's `digest` computes it: its canonical JSON is
  compared byte for byte with Python's json.dumps on fixed cases (non-ASCII, surrogates, 1e-05, 1e+16, -0.0,
  5e-324, large ints, duplicate keys) and on hypothesis-generated documents; a threshold edited by hand without
  re-sealing is refused by the runner, `--verify`, `--profile` and the C API (ee_open);
- the schema compiled into the runner is Python's json_schema() (draft 7, checked with jsonschema's
  Draft7Validator), and a re-sealed bundle whose manifest.schema.json is `{}` is still validated;
- byte flips in program.pte's flatbuffer region and a truncated program.bpte (re-sealed, so only the content is
  hostile) give an error code through the runner, the Python ExecuTorch backend and `edgeexit compare`, never a
  signal; N = 2^50 is refused by the runner and the C API before anything is allocated or read;
- forced exits do the same work in both runners (their profiles' `executed` lists agree).

The Python crash checks run in a child process, so a segfault fails the test instead of killing pytest.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cpp_runner import ROOT, cpp_build, require_tool, resign, run_bare, run_runner  # noqa: F401 (a fixture)

from edgeexit.bundle import sha256
from edgeexit.bundle.manifest import digest, json_schema

SCHEMA_FILE = ROOT / "edgeexit" / "glue" / "executorch" / "schema" / "manifest.schema.json"
REGENERATE = ("python -c \"import json; from edgeexit.bundle.manifest import json_schema; "
              "print(json.dumps(json_schema(), indent=2))\" > edgeexit/glue/executorch/schema/manifest.schema.json")


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root: what a refused run must leave unchanged."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def edit_threshold_unsigned(bundle: Path, dest: Path) -> Path:
    """A copy of `bundle` whose exit-0 threshold is edited in manifest.json by hand, checksum left as it was."""
    out = Path(shutil.copytree(bundle, dest))
    path = out / "manifest.json"
    raw = json.loads(path.read_text())
    raw["exits"][0]["threshold"] = 0.0  # everything exits at 0: a different model, same seal
    path.write_text(json.dumps(raw, indent=2))
    return out


def refused(res: subprocess.CompletedProcess, *parts: str) -> None:
    """Exit status 1 (an error code, not a signal), nothing on stdout, the message's key parts on stderr."""
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    assert res.stdout == ""
    for part in parts:
        assert part in res.stderr, res.stderr[-2000:]


# ------------------------------------------------------------------------------------------- schema and draft


def test_compiled_schema_is_pythons():
    """edgeexit/glue/executorch/schema/manifest.schema.json (compiled into the runner) is json_schema(), stamped draft 7."""
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), f"regenerate it: {REGENERATE}"
    assert json_schema()["$schema"] == "http://json-schema.org/draft-07/schema#"


def test_schema_is_valid_draft7(android_bundle):
    from jsonschema import Draft7Validator
    from jsonschema.exceptions import SchemaError

    schema = json_schema()
    Draft7Validator.check_schema(schema)
    manifest = json.loads((android_bundle / "manifest.json").read_text())
    assert not list(Draft7Validator(schema).iter_errors(manifest))
    manifest["exits"][0]["threshold"] = "high"
    errors = list(Draft7Validator(schema).iter_errors(manifest))
    assert errors and any(list(e.absolute_path)[:3] == ["exits", 0, "threshold"] for e in errors), errors
    with pytest.raises(SchemaError):  # the check can fail
        Draft7Validator.check_schema({**schema, "type": 7})


# ----------------------------------------------------------------------------------------- canonical JSON


def canonical_tool(build: Path) -> str:
    return require_tool(build / "edgeexit_canonical", "the edgeexit_canonical build")


def python_canonical(text: str) -> bytes:
    raw = json.loads(text)
    body = {k: v for k, v in raw.items() if k != "checksum"} if isinstance(raw, dict) else raw
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def cpp_canonical(tool: str, text: str, tmp: Path) -> subprocess.CompletedProcess:
    path = tmp / "doc.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return subprocess.run([tool, str(path)], capture_output=True, timeout=30, check=False)


FLOATS = [0.1, 1e-05, 1e+16, 1e16 + 2, 1e15, 123456789012345.6, 0.0001, -0.0, 0.0, 5e-324, 2.2250738585072014e-308,
          1.7976931348623157e308, 1 / 3, 2.5, 100.0, -1.5e-7, 3e38, 1e22, 1e21, 9007199254740993.0]
CASES = {
    "floats": {"f": FLOATS},
    "ints": {"i": [0, -1, 2**53 + 1, 2**63, 2**64 + 5, -(2**70), 10**40]},
    "unicode": {"class_names": ["chat", "café", "猫", "🐱", "tab\there", "quote\"back\\slash", "\u007f\u0000\u001f",
                                "\u2028"], "ключ": "значение"},
    "nesting": {"b": {"z": 1, "a": [True, False, None, {}, []], "Z": {"é": 1, "e": 2}}, "checksum": "x" * 64},
}
TEXTS = {  # documents that only a text can state
    "duplicate-keys": '{"a": 1, "b": 2, "a": 3}',
    "lone-surrogate": '{"s": "\\ud800x\\udc00", "pair": "\\ud83d\\ude00"}',
    "number-forms": '{"a": -0, "b": 1E5, "c": 1.0e-7, "d": 0.5e+2, "e": -0.0, "f": 12345678901234567890123}',
    "escapes": '{"s": "\\/\\b\\f\\n\\r\\t\\u00e9\\u0041", "checksum": 1}',
    "whitespace": ' \r\n\t{ "a" : [ 1 , 2 ] }\n',
    "nested-checksum": '{"x": {"checksum": 1}, "checksum": "top"}',
}


@pytest.mark.parametrize("name, ascii_", [(n, a) for n in CASES for a in (True, False)] + [(n, None) for n in TEXTS])
def test_canonical_json_matches_python(name, ascii_, cpp_build, tmp_path):
    text = TEXTS[name] if name in TEXTS else json.dumps(CASES[name], ensure_ascii=ascii_, indent=1)
    res = cpp_canonical(canonical_tool(cpp_build), text, tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == python_canonical(text)
    assert hashlib.sha256(res.stdout).hexdigest() == digest(json.loads(text))  # the seal Python writes


@pytest.mark.parametrize("text, part", [
    ('{"a": 1e400}', "out of the range of a double"),
    ('{"a": NaN}', "NaN and Infinity are refused"),
    ('{"a": Infinity}', "NaN and Infinity are refused"),
    ('{"a": 1}x', "extra data"),
    ('{"a": "\x01"}', "control character"),
    ("[" * 300 + "]" * 300, "nested deeper"),
    ('{"a": 01}', "expected"),
], ids=["1e400", "nan", "infinity", "trailing", "control", "deep", "leading-zero"])
def test_canonical_json_refuses_what_python_cannot_digest(text, part, cpp_build, tmp_path):
    res = cpp_canonical(canonical_tool(cpp_build), text, tmp_path)
    assert res.returncode == 1 and res.stdout == b"" and part in res.stderr.decode(), res.stderr
    if "deep" not in part and "expected" not in part and "extra" not in part and "control" not in part:
        # Python reads these but its digest refuses them (json.dumps with allow_nan=False)
        with pytest.raises(ValueError):
            python_canonical(text)


def _strings():  # any code point; lone surrogates and the escapes' edge cases drawn often, not by luck
    edge = st.sampled_from(["\ud800", "\udfff", "\ud83d", "\x7f", "\x00", "\u2028", "\U0001f600", "\"", "\\"])
    return st.text(st.one_of(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), edge),
                   max_size=8)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | _strings(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_strings(), inner, max_size=4),
    max_leaves=12)
CANONICAL_EXAMPLES = 150


@settings(max_examples=CANONICAL_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.dictionaries(_strings(), JSON_VALUES, max_size=5), ascii_=st.booleans(), indent=st.sampled_from([None, 2]))
def test_canonical_json_matches_python_on_generated_documents(doc, ascii_, indent, cpp_build, tmp_path):
    text = json.dumps(doc, ensure_ascii=ascii_, indent=indent)
    res = cpp_canonical(canonical_tool(cpp_build), text, tmp_path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a raw lone surrogate is not UTF-8: Python's read_text refuses the file, so does C++
        assert res.returncode == 1 and "invalid UTF-8" in res.stderr.decode(), res.stderr
        return
    assert res.returncode == 0, (text, res.stderr)
    assert res.stdout == python_canonical(text), text
    assert hashlib.sha256(res.stdout).hexdigest() == digest(json.loads(text))


# ------------------------------------------------------------------------------------- checksum and schema


def load_c_api(build: Path) -> ctypes.CDLL:
    if not (build / "libedgeexit.so").is_file():
        pytest.fail(f"libedgeexit.so is not built | got: {build}", pytrace=False)
    lib = ctypes.CDLL(str(build / "libedgeexit.so"))
    lib.ee_open.restype = ctypes.c_void_p
    lib.ee_open.argtypes = [ctypes.c_char_p]
    lib.ee_last_error.restype = ctypes.c_char_p
    lib.ee_close.argtypes = [ctypes.c_void_p]
    for name in ("ee_run",):
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                                       ctypes.c_void_p, ctypes.c_void_p]
    lib.ee_run_forced.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                                  ctypes.c_void_p, ctypes.c_void_p]
    return lib


C_API_PROBE = """
import ctypes, sys
sys.path.insert(0, sys.argv[3])
from test_cpp_trust import load_c_api
from pathlib import Path
lib = load_c_api(Path(sys.argv[1]))
rt = lib.ee_open(sys.argv[2].encode())
print("NULL" if not rt else "OPENED")
print(lib.ee_last_error().decode())
"""


def c_api_open(build: Path, bundle: Path) -> subprocess.CompletedProcess:
    """ee_open through ctypes, in a child process (a crash fails the test, not pytest)."""
    return subprocess.run([sys.executable, "-c", C_API_PROBE, str(build), str(bundle), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent)])})


def test_hand_edited_threshold_is_refused_everywhere(cpp_build, android_bundle, inputs, tmp_path):
    from edgeexit.bundle import load_bundle
    from edgeexit.errors import BundleError

    bundle = edit_threshold_unsigned(android_bundle, tmp_path / "bundle")
    before = snapshot(bundle)
    with pytest.raises(BundleError, match="modified after the bundle was written"):
        load_bundle(bundle)  # Python refuses it ...
    seal = "manifest.json was modified after the bundle was written"
    refused(run_runner(cpp_build, bundle, inputs, tmp_path), seal, "checksum")  # ... and so does every C++ path
    refused(run_bare(cpp_build, bundle, "--verify"), seal)
    refused(run_bare(cpp_build, bundle, "--profile", "--rounds", "1"), seal)
    res = c_api_open(cpp_build, bundle)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "NULL" and seal in res.stdout, res.stdout
    assert snapshot(bundle) == before
    # the same edit re-sealed opens everywhere (the seal is what was refused)
    resign(bundle, lambda m: None)
    assert run_bare(cpp_build, bundle, "--verify").returncode == 0


def test_shipped_schema_is_not_what_the_runner_trusts(cpp_build, android_bundle, inputs, tmp_path):
    """manifest.schema.json replaced by `{}` (accepts anything) and re-sealed: the compiled-in schema still refuses a
    threshold that is a string, and a valid manifest still runs (the shipped copy plays no part)."""
    def empty_schema(dest: Path, edit) -> Path:
        out = Path(shutil.copytree(android_bundle, dest))
        (out / "manifest.schema.json").write_text("{}")

        def both(m):
            m["files"]["manifest.schema.json"] = sha256(out / "manifest.schema.json")
            edit(m)

        return resign(out, both)

    bad = empty_schema(tmp_path / "bad", lambda m: m["exits"][0].__setitem__("threshold", "high"))
    before = snapshot(bad)
    refused(run_runner(cpp_build, bad, inputs, tmp_path), "does not match the v2 schema", "/exits/0/threshold")
    assert snapshot(bad) == before
    good = empty_schema(tmp_path / "good", lambda m: None)
    res = run_runner(cpp_build, good, inputs, tmp_path)
    assert res.returncode == 0, res.stderr


def test_unlisted_file_is_refused(cpp_build, android_bundle, inputs, tmp_path):
    bundle = Path(shutil.copytree(android_bundle, tmp_path / "bundle"))
    (bundle / "tensorrt").mkdir(exist_ok=True)
    (bundle / "tensorrt" / "argparse.py").write_text("open('marker', 'w')\n")
    refused(run_runner(cpp_build, bundle, inputs, tmp_path), "does not list", "tensorrt/argparse.py")
    assert not (tmp_path / "marker").exists() and not Path("marker").exists()


# --------------------------------------------------------------------------------------- hostile programs

PY_OPEN_ALL = """
import json, sys
import numpy as np
from edgeexit.errors import EdgeExitError
from edgeexit.runtime import EarlyExitRuntime
for d in sys.argv[1:]:
    try:
        rt = EarlyExitRuntime.open(d, "executorch")
        x = np.zeros((3, *rt.input_shape), np.float32)
        rt.run(x)
        rt.close()
        print(json.dumps([d, "ran", ""]), flush=True)
    except EdgeExitError as err:
        print(json.dumps([d, type(err).__name__, str(err)]), flush=True)
"""


def flipped_bundles(bundle: Path, dest: Path, flips: list[tuple[int, int]]) -> list[Path]:
    """One re-sealed copy of `bundle` per (byte, bit) flip of pte/program.pte (only pte/ and the manifest copied)."""
    data = (bundle / "pte" / "program.pte").read_bytes()
    out = []
    for i, (pos, bit) in enumerate(flips):
        d = Path(shutil.copytree(bundle, dest / f"flip{i}"))
        b = bytearray(data)
        b[pos] ^= 1 << bit
        (d / "pte" / "program.pte").write_bytes(bytes(b))
        resign(d, lambda m, d=d: m["files"].__setitem__("pte/program.pte", sha256(d / "pte" / "program.pte")))
        out.append(d)
    return out


def flatbuffer_region(pte: Path) -> int:
    """The end of the program flatbuffer (segment base offset of the extended header 'eh00'), where a flip reaches
    ExecuTorch's parser rather than the delegate's payload."""
    data = pte.read_bytes()
    assert data[8:12] == b"eh00", data[:16]
    _, _, segment_base = struct.unpack_from("<IQQ", data, 12)
    return int(segment_base)


PTE_FLIPS = 40


def test_pte_byte_flips_never_crash(cpp_build, android_bundle, tmp_path):
    """40 seeded bit flips in program.pte's flatbuffer region, each in a re-sealed bundle: the runner and the
    Python ExecuTorch backend each run or refuse, never die of a signal; Python refuses only with EdgeExitError."""
    end = flatbuffer_region(android_bundle / "pte" / "program.pte")
    rng = random.Random(20261204)
    flips = [(rng.randrange(end), rng.randrange(8)) for _ in range(PTE_FLIPS)]
    bundles = flipped_bundles(android_bundle, tmp_path, flips)
    x = np.zeros((3, *json.loads((android_bundle / "manifest.json").read_text())["input"]["shape"]), np.float32)
    outcomes = {"ran": 0, "refused": 0}
    for b in bundles:
        res = run_runner(cpp_build, b, x, tmp_path)
        assert res.returncode in (0, 1), (b.name, flips[bundles.index(b)], res.returncode, res.stderr[-1500:])
        outcomes["ran" if res.returncode == 0 else "refused"] += 1
        if res.returncode == 1:
            assert "edgeexit_runner: " in res.stderr and " | " in res.stderr, res.stderr[-1500:]
    py = subprocess.run([sys.executable, "-c", PY_OPEN_ALL, *map(str, bundles)], capture_output=True, text=True,
                        timeout=900, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    done = [json.loads(line) for line in py.stdout.splitlines() if line.startswith("[")]
    assert py.returncode == 0, (f"died after {len(done)} of {len(bundles)} bundles (the next: "
                                f"{flips[len(done)] if len(done) < len(flips) else None})", py.returncode,
                                py.stderr[-3000:])
    assert len(done) == len(bundles)
    assert outcomes["refused"] >= 1 and any(kind != "ran" for _, kind, _ in done)  # the flips reached the parser
    print(f"\n[pte flips] cpp {outcomes}; python "
          f"{ {k: sum(1 for _, kind, _ in done if kind == k) for k in {kind for _, kind, _ in done}} }")


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_pte_flips_through_the_runner_hypothesis(data, cpp_build, android_bundle, tmp_path_factory):
    """hypothesis picks the flips (1 to 4 bits anywhere in the flatbuffer region): the runner never dies."""
    end = flatbuffer_region(android_bundle / "pte" / "program.pte")
    flips = data.draw(st.lists(st.tuples(st.integers(0, end - 1), st.integers(0, 7)), min_size=1, max_size=4))
    tmp = tmp_path_factory.mktemp("hflip")
    d = Path(shutil.copytree(android_bundle, tmp / "bundle"))
    b = bytearray((d / "pte" / "program.pte").read_bytes())
    for pos, bit in flips:
        b[pos] ^= 1 << bit
    (d / "pte" / "program.pte").write_bytes(bytes(b))
    resign(d, lambda m: m["files"].__setitem__("pte/program.pte", sha256(d / "pte" / "program.pte")))
    x = np.zeros((2, *json.loads((d / "manifest.json").read_text())["input"]["shape"]), np.float32)
    res = run_runner(cpp_build, d, x, tmp)
    assert res.returncode in (0, 1), (flips, res.returncode, res.stderr[-1500:])
    shutil.rmtree(tmp)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_truncated_bpte_is_an_error(fraction, cpp_build, android_bundle, tmp_path):
    """A truncated program.bpte, re-sealed: `--verify` says it is not a BundledProgram (flatbuffers' verifier);
    `edgeexit compare` (in a child process) exits non-zero with the same message, no traceback, no signal."""
    bundle = Path(shutil.copytree(android_bundle, tmp_path / "bundle"))
    bpte = bundle / "pte" / "program.bpte"
    data = bpte.read_bytes()
    bpte.write_bytes(data[:int(len(data) * fraction)])
    resign(bundle, lambda m: m["files"].__setitem__("pte/program.bpte", sha256(bpte)))
    before = snapshot(bundle)
    refused(run_bare(cpp_build, bundle, "--verify"), "not a BundledProgram")
    probe = ("import sys; from typer.testing import CliRunner; from edgeexit.cli import app; "
             "r = CliRunner().invoke(app, ['compare', sys.argv[1], '--backends', 'executorch', '--samples', '0']); "
             "print(r.output); print('EXIT', r.exit_code, type(r.exception).__name__)")
    res = subprocess.run([sys.executable, "-c", probe, str(bundle)], capture_output=True, text=True, timeout=900,
                         check=False, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"})
    assert res.returncode == 0, (res.returncode, res.stderr[-3000:])  # the child lived: no signal
    assert "EXIT 2 SystemExit" in res.stdout and "Traceback" not in res.stdout, res.stdout[-3000:]
    assert "not a BundledProgram" in res.stdout and "truncated" in res.stdout, res.stdout[-3000:]
    assert snapshot(bundle) == before


def test_absurd_batch_size_is_an_error(cpp_build, android_bundle, inputs, tmp_path):
    """N = 2^50: the runner refuses it before allocating (it threw std::length_error and aborted), and the C API
    returns EE_ERR_ARGUMENT without reading past the caller's one sample."""
    x = inputs[:1]
    inp = tmp_path / "x.f32"
    x.astype("<f4").tofile(inp)
    runner = require_tool(cpp_build / "edgeexit_runner", "the edgeexit_runner build")
    res = subprocess.run([runner, str(android_bundle), str(inp), str(2**50)], capture_output=True, text=True,
                         timeout=60, check=False)
    refused(res, "has the wrong size")
    probe = f"""
import ctypes, sys
import numpy as np
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_cpp_trust import load_c_api
from pathlib import Path
lib = load_c_api(Path({str(cpp_build)!r}))
rt = lib.ee_open({str(android_bundle)!r}.encode())
assert rt, lib.ee_last_error()
x = np.load({str(tmp_path / "x.npy")!r})
pred, exits = np.zeros(1, np.int64), np.zeros(1, np.int32)
for forced in (False, True):
    args = (x.ctypes.data, 2**50, pred.ctypes.data, exits.ctypes.data, None)
    code = lib.ee_run_forced(rt, 0, *args) if forced else lib.ee_run(rt, *args)
    print(code, lib.ee_last_error().decode())
print(lib.ee_run(rt, x.ctypes.data, 1, pred.ctypes.data, exits.ctypes.data, None))  # one sample still runs
lib.ee_close(rt)
"""
    np.save(tmp_path / "x.npy", np.ascontiguousarray(x))
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    for line in lines[:2]:
        assert line.startswith("1 ") and "not a batch size this runtime can take" in line, lines  # EE_ERR_ARGUMENT
    assert lines[2] == "0", lines


# ------------------------------------------------------------------------------------------- forced exits


@pytest.mark.parametrize("thresholds", ["exported", "none-at-0"])
def test_forced_exits_do_the_same_work_in_both_runners(thresholds, cpp_build, android_bundle, tmp_path):
    """Both profiles list what each entry ran: exitK is segments 0..K plus the exit tests of the earlier exits that
    have a threshold (none where the threshold is null), the same in C++ and Python."""
    from edgeexit.device_runner import profile_device

    bundle = android_bundle
    if thresholds == "none-at-0":
        bundle = resign(Path(shutil.copytree(android_bundle, tmp_path / "bundle")),
                        lambda m: m["exits"][0].__setitem__("threshold", None))
    out = tmp_path / "profile.json"
    res = run_bare(cpp_build, bundle, "--profile", "--batches", "1", "--rounds", "1", "--calls", "1", "--warmup", "0",
                   "--out", str(out))
    assert res.returncode == 0, res.stderr
    cpp = json.loads(out.read_text())["executed"]
    py = profile_device(bundle, backend="executorch", batches=[1], rounds=1, calls=1, warmup=0)["executed"]
    assert cpp == py
    manifest = json.loads((bundle / "manifest.json").read_text())
    n = len(manifest["exits"])
    for k in range(n):
        want = []
        for j in range(k + 1):
            want.append(f"segment{j}")
            if j < k and manifest["exits"][j]["threshold"] is not None:
                want.append(f"test{j}")
        assert cpp[f"exit{k}"] == want, (k, cpp)
    assert cpp["full"] == cpp["full_repeat"] == ["full"]
    assert ("test0" in cpp[f"exit{n - 1}"]) is (thresholds == "exported")
