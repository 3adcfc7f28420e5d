"""Issue 16, the device side: what reaches a shell over adb / ssh, the device's JSON and profile.json, vectors.npz and
the runtime's outputs. Every case: the error class, the exit code where a command runs, the message's key parts, no
payload ran (marker files absent) and nothing the user had changed.

adb and ssh run as real processes: a stand-in `adb` first on PATH records its argv and does what adb would do, on
this machine (`shell` through `sh -c`, `push` as a copy), so an unquoted name would really run its payload here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_run
from rich.console import Console
from typer.testing import CliRunner

from edgeexit.cli import app
from edgeexit.compare import load_vectors, read_vectors
from edgeexit.devices import AdbDevice, RunnerOptions, SshDevice, parse_device, read_device_profile, run_profile
from edgeexit.errors import BundleError, ConfigError, DeviceError, ShapeError
from edgeexit.profile import read_profile_json

runner = CliRunner()
CHECKSUM = "ab" * 32


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root and its sha256: what "nothing changed" compares."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def device_doc(**edits) -> dict:
    """A well-formed device profile (edgeexit-device-profile/1) of a 2-exit bundle, 3 rounds, with `edits`."""
    times = {n: [0.5, 0.6, 0.55] for n in ("full", "full_repeat", "exit0", "exit1", "segment0", "head0")}
    doc = {"format": "edgeexit-device-profile/1", "runner": "cpp", "backend": "executorch", "bundle_checksum": CHECKSUM,
           "device": {"hostname": "phone", "system": "Linux", "machine": "aarch64", "cpus": 8, "cpu": "Cortex-A78"},
           "versions": {"executorch": "1.5.1"}, "warmup": 1, "rounds": 3, "calls": 1, "batches": {"1": times},
           "peak_rss_mb": 12.5}
    doc.update(edits)
    return doc


# --- adb: the stand-in executable and the fake runner it runs -------------------------------------------------------

FAKE_ADB = """#!{python}
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ["ADB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:1] == ["-s"]:
    args = args[2:]
cwd = os.environ["ADB_CWD"]  # a payload like `touch MARKER` would land here
if args[0] == "get-state":
    print("device")
elif args[0] in ("shell", "exec-out"):
    sys.stdout.flush()
    sys.exit(subprocess.run(["sh", "-c", args[1]], cwd=cwd).returncode)
elif args[0] == "push":
    src, dst = args[1], args[2]
    (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, dst)
else:
    sys.exit(f"fake adb: {{args}}")
"""

FAKE_RUNNER = """#!/bin/sh
# edgeexit_runner BUNDLE --profile [options] --out FILE: writes the document the test prepared
while [ $# -gt 0 ]; do
  if [ "$1" = "--out" ]; then cp "$FAKE_PROFILE" "$2"; exit 0; fi
  shift
done
exit 3
"""


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """PATH with the stand-in adb first; the phone's /data/local/tmp is a folder of tmp_path. Yields (log, cwd)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir / "adb", FAKE_ADB.format(python=sys.executable))
    cwd = tmp_path / "shell-cwd"
    cwd.mkdir()
    phone = tmp_path / "phone"
    phone.mkdir()
    log = tmp_path / "adb.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ADB_LOG", str(log))
    monkeypatch.setenv("ADB_CWD", str(cwd))
    monkeypatch.setattr(AdbDevice, "ROOT", str(phone / "edgeexit-profile"))
    return log, cwd


def _bundle_dir(tmp_path: Path, name: str = "bundle") -> Path:
    bundle = tmp_path / name
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")  # the transport never opens the bundle: any folder will do
    return bundle


def _profile_over_adb(tmp_path: Path, doc: bytes | dict, bundle: Path | None = None, serial: str = "emulator-5554"):
    bundle = bundle or _bundle_dir(tmp_path)
    fake_doc = tmp_path / "device.json"
    fake_doc.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    os.environ["FAKE_PROFILE"] = str(fake_doc)
    binary = _executable(tmp_path / "edgeexit_runner", FAKE_RUNNER)
    return run_profile(parse_device(f"adb://{serial}"), bundle, RunnerOptions(rounds=3, calls=1, warmup=1),
                       runner_binary=binary)


def test_adb_quotes_a_hostile_bundle_folder_name(fake_adb, tmp_path, monkeypatch):
    log, cwd = fake_adb
    bundle = _bundle_dir(tmp_path, "b;touch MARKER1;x $(touch MARKER2) `touch MARKER3`")
    before = tree_digest(bundle)
    raw = _profile_over_adb(tmp_path, device_doc(), bundle)
    assert raw["bundle_checksum"] == CHECKSUM and raw["batches"]["1"]["full"] == [0.5, 0.6, 0.55]
    for marker in ("MARKER1", "MARKER2", "MARKER3"):
        assert not list(tmp_path.rglob(marker)) and not Path(marker).exists()
    assert tree_digest(bundle) == before  # the user's folder as it was
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(c[:2] == ["-s", "emulator-5554"] for c in calls)
    shells = [c[3] for c in calls if c[2] in ("shell", "exec-out")]
    assert len(shells) == 5  # prepare, chmod, run, fetch (exec-out), clean up
    wd = f"{AdbDevice.ROOT}/b_touch_MARKER1_x___touch_MARKER2___touch_MARKER3_"
    # each shell word is one quoted word: the folder's name reached the phone only as plain characters
    assert shlex.split(shells[1]) == ["chmod", "755", f"{wd}/edgeexit_runner"]
    assert shlex.split(shells[2])[:3] == ["cd", wd, "&&"]
    assert [c[4] for c in calls if c[2] == "push"] == [f"{wd}/bundle", f"{wd}/edgeexit_runner"]
    assert not Path(wd).exists()  # cleaned up on the "phone"


@pytest.mark.parametrize("serial", ["-s", "a;touch MARKER", "$(touch MARKER)", "x y", "--help"])
def test_adb_serial_with_shell_or_option_syntax_is_refused(fake_adb, serial, tmp_path):
    log, cwd = fake_adb
    with pytest.raises(ConfigError) as err:
        parse_device(f"adb://{serial}")
    assert "bad adb serial" in str(err.value) and "no leading '-'" in str(err.value)
    res = runner.invoke(app, ["profile", "--run-dir", str(tmp_path / "run"), "--device", f"adb://{serial}"])
    assert res.exit_code == 2 and "bad adb serial" in res.output and "Traceback" not in res.output
    assert not log.exists() and not (cwd / "MARKER").exists()  # adb never ran
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("uri, part", [
    ("ssh://-oProxyCommand=touch MARKER@host", "bad user"),
    ("ssh://user@-oProxyCommand=touch MARKER", "bad host"),
    ("ssh://host?identity=-oProxyCommand=touch MARKER", "bad identity path"),
    ("ssh://host?known_hosts=x -oProxyCommand=touch MARKER", "bad known_hosts path"),
    ("ssh://host?python=python3;touch MARKER", "bad python path"),
    ("ssh://host?python=$(touch MARKER)", "bad python path"),
    ("ssh://us%27er@host", "bad user"),
    ("ssh://host:0", "bad ssh port"),
    ("ssh://host:99999", "not an ssh device address"),
    ("ssh://user:secret@host", "never a password"),
    ("ssh://host/some/path", "not an ssh device address"),
    ("ssh://host?python=a&python=b", "given twice"),
    ("ssh://host?colour=red", "unknown ssh device option"),
])
def test_ssh_addresses_with_option_or_shell_syntax_are_refused(uri, part, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        parse_device(uri)
    assert part in str(err.value) and "expected" in str(err.value) and "secret" not in str(err.value)
    res = runner.invoke(app, ["profile", "--run-dir", str(tmp_path / "run"), "--device", uri])
    assert res.exit_code == 2 and part in res.output.replace("\n", " ") and "Traceback" not in res.output
    assert not (tmp_path / "MARKER").exists() and not (tmp_path / "run").exists()


def test_ssh_argv_ends_options_before_the_destination(tmp_path, monkeypatch):
    """The recorded argv of a stand-in ssh: `--` right before user@host; and real OpenSSH, handed a destination
    that starts with '-' anyway, reads no option from it (the marker of its ProxyCommand is not created)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "ssh.log"
    _executable(bin_dir / "ssh", f"#!{sys.executable}\nimport json, sys\n"
                f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\nsys.exit(255)\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    dev = parse_device("ssh://nvidia@jetson.local:2222?python=/usr/bin/python3&identity=/keys/id")
    with pytest.raises(DeviceError, match="connecting to ssh://nvidia@jetson.local"):
        dev.check()
    argv = json.loads(log.read_text())
    assert argv[argv.index("--") + 1] == "nvidia@jetson.local" and argv.index("--") == len(argv) - 3
    assert argv[:argv.index("--")] == ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p", "2222", "-i", "/keys/id",
                                       "-o", "IdentitiesOnly=yes"]
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    if shutil.which("ssh") is None:
        pytest.fail("OpenSSH's client is needed (apt-get install openssh-client)")
    sneaky = SshDevice("ssh://127.0.0.1:1")
    sneaky.host = f"-oProxyCommand=touch {tmp_path / 'MARKER'}"  # as if the parser had let it through
    with pytest.raises(DeviceError):
        sneaky.check()
    assert not (tmp_path / "MARKER").exists()


# --- the device's JSON -------------------------------------------------------------------------------------------------

def _timings(value):
    doc = device_doc()
    doc["batches"]["1"]["exit0"] = [value, 0.5, 0.5]
    return doc


@pytest.mark.parametrize("doc, part", [
    (b"this is not JSON", "is not JSON"),
    (b"\xff\xfe{}", "is not JSON"),
    (b"[1, 2, 3]", "not a JSON object"),
    (b'{"format": "edgeexit-device-profile/1", "batches": {"1": {"full": [NaN]}}}', "is not JSON"),
    (b"[" * 100000 + b"]" * 100000, "is not JSON"),
    (json.dumps({**device_doc(), "format": "something/9"}).encode(), "speaks another format"),
    ({k: v for k, v in device_doc().items() if k != "batches"}, "batches: Field required"),
    (_timings(-1.0), "greater than 0"),
    (_timings(0.0), "greater than 0"),
    (_timings(1e300), "less than or equal"),
    (_timings("0.5"), "valid number"),
    (_timings(True), "valid number"),
    (device_doc(rounds=4), "other than rounds=4"),
    (device_doc(backend="[/]"), "backend"),
    (device_doc(device={**device_doc()["device"], "hostname": "\x1b[31mred"}), "hostname"),
    (device_doc(device={**device_doc()["device"], "cpu": "\x9b31mred"}), "cpu"),
    (device_doc(colour="red"), "Extra inputs are not permitted"),
    (device_doc(batches={"1": {"exit0": [0.5] * 3}}), "no 'full' entry"),
])
def test_bad_device_json_over_adb_is_a_device_error(fake_adb, tmp_path, doc, part):
    log, cwd = fake_adb
    with pytest.raises(DeviceError) as err:
        _profile_over_adb(tmp_path, doc)
    assert part in str(err.value) and "hint" in str(err.value)
    assert "Traceback" not in str(err.value)
    assert not list((tmp_path / "phone").rglob("*.json"))  # the phone's work directory was removed all the same


def test_a_well_formed_device_json_reads_back_as_is():
    doc = device_doc()
    unset = {"runner_location": None, "executed": None, "threads": None, "prime_ms": None}  # optional: read back as None
    assert read_device_profile(json.dumps(doc).encode()) == {**doc, **unset}


# --- profile.json: `edgeexit report` and calibration with a millisecond budget ---------------------------------------

def _edit_profile(prof: dict, case: str):
    """One kind of damage to a profile.json (a dict, or raw bytes to write)."""
    if case == "not json":
        return b"{not json"
    if case == "bad utf-8":
        return b'{"format": "edgeexit-profile/2", "device": "\xff"}'
    if case == "a list":
        return b"[]"
    if case == "missing key":
        return {k: v for k, v in prof.items() if k != "latency_ms"}
    if case == "nan":
        return json.dumps({**prof, "latency_ms": [math.nan] * len(prof["latency_ms"])}).encode()
    if case == "negative ms trusted":
        out = json.loads(json.dumps(prof))
        for t in out["batches"].values():
            t["full"]["p50_ms"] = -1.0
        out["full"]["p50_ms"] = -1.0
        out["trusted"] = True
        return out
    if case == "trusted but noisy":
        out = json.loads(json.dumps(prof))
        for n in [*out["noise"].values(), *(t["noise"] for t in out["batches"].values())]:
            n.update(noise=0.5, trusted=True)
        out["trusted"] = True
        return out
    if case == "unknown key":
        return {**prof, "colour": "red"}
    raise AssertionError(case)


PROFILE_CASES = {"not json": "is not JSON", "bad utf-8": "is not JSON", "a list": "is not a JSON object",
                 "missing key": "latency_ms: Field required", "nan": "is not JSON",
                 "negative ms trusted": "greater than 0", "trusted but noisy": "trusted=True with noise 0.5",
                 "unknown key": "Extra inputs are not permitted"}


def _write(path: Path, data) -> None:
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())


@pytest.mark.parametrize("case", list(PROFILE_CASES))
def test_a_bad_profile_json_is_refused_by_report_and_calibrate(built, tmp_path, case):
    names = [n for n in ("checkpoint.pt", "pruned.pt", "calibration.json", "eval.json", "profile.json")
             if (built[0] / n).is_file()]
    run = copy_run(built, tmp_path / "run", names)
    shutil.copytree(built[0] / "bundle", run / "bundle")
    prof = json.loads((run / "profile.json").read_text())
    assert read_profile_json(run / "profile.json")["latency_ms"] == prof["latency_ms"]  # the genuine one reads
    _write(run / "profile.json", _edit_profile(prof, case))
    before = tree_digest(run)
    with pytest.raises(ConfigError) as err:
        read_profile_json(run / "profile.json")
    assert PROFILE_CASES[case] in str(err.value) and "profile again" in str(err.value)
    res = runner.invoke(app, ["report", "--run-dir", str(run)])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert PROFILE_CASES[case] in res.output.replace("\n", " ")
    budget = f"{prof['latency_ms'][-1] * 1.5:.6f}ms@{prof['target']}"
    res = runner.invoke(app, ["calibrate", "--run-dir", str(run), "--budget", budget])
    assert res.exit_code == 2 and "Traceback" not in res.output and "profile.json" in res.output, res.output
    after = tree_digest(run)
    assert {k: v for k, v in after.items() if k != ".edgeexit.lock"} == \
           {k: v for k, v in before.items() if k != ".edgeexit.lock"}  # no report, calibration or bundle written


def test_device_and_bundle_strings_are_not_rich_markup():
    """A profile and a report whose strings are rich markup render them as text (and "[/]", which would make rich
    raise, renders too)."""
    from edgeexit.report import report_table, summary_table
    from edgeexit.tables import etdump_table, profile_table

    stats = {"p50_ms": 1.0, "p10_ms": 1.0, "p90_ms": 1.0, "spread": 0.0, "rounds": 3}
    row = {"index": 0, "name": "[/]", "cumulative": stats, "segment": None, "head": None, "static": None,
           "time_fraction": 1.0, "macs_fraction": 1.0}
    prof = {"backend": "[bold red]evil", "device": "ssh://[/]", "rounds": 3, "batch_size": 1,
            "batches": {"1": {"exits": [row], "full": stats, "noise": {"noise": 0.0},
                              "forced_final": {"ratio": 1.0, "heads_fraction": 0.0}}}}
    rep = {"backend": "[/]", "device": "[link=file:///etc/passwd]x", "split": "[/]",
           "exits": [{"index": 0, "name": "[red]exit[/red]", "answered": 1, "accuracy_alone": 1.0,
                      "macs_fraction": 1.0, "time_fraction": 1.0, "static_fraction": None}]}
    result = {"split": "[/]", "samples": 1, "full_accuracy": 1.0, "early_exit_accuracy": 1.0, "macs_fraction": 1.0,
              "latency_fraction_by_batch": {"[/]": 1.0}, "backend": "[/]", "exit_histogram": [1]}
    timings = {"batch_size": 1, "runs": 1, "methods": [{"method": "[/]", "ms": 1.0, "p90_ms": 1.0,
                                                        "operator_count": 1, "operators": [{"name": "[b]op", "ms": 1}]}]}
    console = Console(record=True, width=400)
    for table in (profile_table(prof), report_table(rep), summary_table(result), etdump_table(timings)):
        console.print(table)
    text = console.export_text()
    for literal in ("[/]", "[bold red]evil", "[link=file:///etc/passwd]x", "[red]exit[/red]", "[b]op"):
        assert literal in text


# --- vectors.npz ---------------------------------------------------------------------------------------------------

def _vectors(n=2, shape=(1, 4, 4), classes=3, exits=2, **replace) -> dict:
    arrays = {"inputs": np.zeros((n, *shape), np.float32)}
    for k in range(exits):
        arrays[f"exit{k}_logits"] = np.zeros((n, classes), np.float32)
        arrays[f"exit{k}_score"] = np.zeros(n, np.float32)
    arrays.update(replace)
    return {k: v for k, v in arrays.items() if v is not None}


@pytest.mark.parametrize("arrays, part", [
    (_vectors(inputs=np.array([object(), object()], dtype=object)), "array inputs is not what the manifest says"),
    (_vectors(inputs=np.zeros((2, 1, 4, 5), np.float32)), "array inputs is not what the manifest says"),
    (_vectors(inputs=np.zeros((2, 1, 4, 4), np.float64)), "array inputs is not what the manifest says"),
    (_vectors(exit1_logits=np.zeros((2, 4), np.float32)), "array exit1_logits is not what the manifest says"),
    (_vectors(exit0_score=np.zeros((3,), np.float32)), "array exit0_score is not what the manifest says"),
    (_vectors(exit0_score=np.array([np.nan, 0], np.float32)), "holds NaN or inf"),
    (_vectors(exit1_score=None), "other arrays than the manifest's exits call for"),
    (_vectors(extra=np.zeros(1, np.float32)), "other arrays than the manifest's exits call for"),
    (_vectors(n=0), "1 <= N <= 4096"),
])
def test_bad_vectors_are_a_bundle_error(tmp_path, arrays, part):
    path = tmp_path / "vectors.npz"
    marker = tmp_path / "MARKER"
    np.savez(path, **arrays)
    before = path.read_bytes()
    with pytest.raises(BundleError) as err:
        load_vectors(path, (1, 4, 4), 3, 2)
    assert part in str(err.value) and "export the bundle again" in str(err.value)
    assert path.read_bytes() == before and not marker.exists()


def test_a_pickle_in_vectors_never_runs(tmp_path):
    """An object array whose pickle would create a marker: refused by its header, the pickle never loaded."""
    marker = tmp_path / "MARKER"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "vectors.npz"
    np.savez(path, **_vectors(inputs=np.array([Payload()], dtype=object)), allow_pickle=True)
    with pytest.raises(BundleError, match="array inputs is not what the manifest says"):
        load_vectors(path, (1, 4, 4), 3, 2)
    assert not marker.exists()


def test_compare_on_a_resealed_bundle_with_bad_vectors_exits_cleanly(built, tmp_path):
    from test_cpp_runner import resign

    from edgeexit.bundle import load_bundle, sha256

    bundle = Path(shutil.copytree(built[0] / "bundle", tmp_path / "bundle"))
    vectors = read_vectors(load_bundle(bundle))
    np.savez(bundle / "vectors.npz", **{**vectors, "inputs": vectors["inputs"][:, :, :3]})
    resign(bundle, lambda m: m["files"].__setitem__("vectors.npz", sha256(bundle / "vectors.npz")))
    before = tree_digest(bundle)
    res = runner.invoke(app, ["compare", str(bundle), "--samples", "0"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    out = res.output.replace("\n", " ")
    assert "vectors.npz: array inputs is not what the manifest says" in out and "export the bundle again" in out
    assert tree_digest(bundle) == before


# --- the runtime: non-finite outputs, thresholds ---------------------------------------------------------------------

def test_an_input_that_overflows_inside_the_network_raises_naming_the_exit(tiny_runtime):
    x = np.random.default_rng(0).standard_normal((5, 1, 16, 16)).astype(np.float32)
    x[3] = 3e38  # finite, so the input check lets it in; the network's float32 arithmetic does not
    good = tiny_runtime.run(x[:3])
    for call in (tiny_runtime.run, tiny_runtime.exit_outputs):
        with pytest.raises(ShapeError) as err:
            call(x)
        msg = str(err.value)
        assert "non-finite" in msg and "sample 3" in msg and "exit " in msg and "hint" in msg
    forced = tiny_runtime.forced(0)
    # forced to answer at exit 0: no exit test there, so the non-finite logits are what it finds
    with pytest.raises(ShapeError, match=r"exit 0 \(exit0\) gave non-finite logits .* for sample 3"):
        forced.run(x)
    np.testing.assert_array_equal(tiny_runtime.run(x[:3]).predictions, good.predictions)  # nothing stuck


@pytest.mark.parametrize("threshold, part", [(math.nan, "is NaN"), ("abc", "not a number"), ("0.5", "not a number"),
                                             (True, "not a number"), ([0.5], "not a number")])
def test_thresholds_must_be_numbers_or_none(tiny_runtime, threshold, part):
    with pytest.raises(ConfigError) as err:
        tiny_runtime.with_thresholds([threshold, None, None])
    assert part in str(err.value) and "threshold of exit 0" in str(err.value)


def test_thresholds_are_float32_as_the_scores_are(tiny_runtime):
    rt = tiny_runtime.with_thresholds([1e-310, 0.50000001, math.inf])
    assert rt.thresholds == [0.0, 0.5, None]
    assert tiny_runtime.with_thresholds([-math.inf, 1e39, None]).thresholds == [-math.inf, None, None]
