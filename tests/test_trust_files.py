"""edgeexit deletes only what it can prove it wrote, and loads only what the manifest lists: --out onto a user's
folder, look-alike version folders and temp files in a run directory, unlisted files in a bundle, a reference that
borrows an exit's file, manifest values that used to end in a traceback, and byte flips of manifest.json."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_bundle, copy_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from edgeexit import jsonio
from edgeexit.bundle import Manifest, digest, load_bundle
from edgeexit.bundle.store import BUNDLE_MARK
from edgeexit.cli import app
from edgeexit.errors import BundleError, EdgeExitError
from edgeexit.rundir import RunDir

runner = CliRunner()


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under `root` (hidden ones too, links not followed): a file's sha256, a link's target, 'dir'."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for n in dirnames:
            p = here / n
            out[p.relative_to(root).as_posix()] = f"link:{os.readlink(p)}" if p.is_symlink() else "dir"
        for n in filenames:
            p = here / n
            rel = p.relative_to(root).as_posix()
            out[rel] = f"link:{os.readlink(p)}" if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _resign(bundle: Path, edit) -> None:
    raw = json.loads((bundle / "manifest.json").read_text())
    edit(raw)
    raw["checksum"] = digest(raw)
    (bundle / "manifest.json").write_text(json.dumps(raw))


@pytest.fixture
def calibrated(built, tmp_path):
    """A run directory with checkpoint and calibration, ready for `edgeexit export`."""
    src, _ = built
    names = [n for n in ("checkpoint.pt", "pruned.pt", "calibration.json") if (src / n).is_file()]
    return copy_run(built, tmp_path / "run", names)


def _export(run: Path, *extra: str):
    return runner.invoke(app, ["export", "--run-dir", str(run), *extra])


# ------------------------------------------------------------------------------------------------ --out

def test_out_onto_a_folder_with_a_users_manifest_is_refused_and_deletes_nothing(calibrated, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text('{"schema_version": 2, "my": "own manifest"}')
    (mine / "thesis.tex").write_text("years of work")
    (mine / "figs").mkdir()
    (mine / "figs" / "a.png").write_bytes(b"\x89PNG")
    before, around = snapshot(mine), sorted(p.name for p in tmp_path.iterdir())
    res = _export(calibrated, "--out", str(mine))
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "not an edgeexit bundle" in res.output and "never deletes files it did not write" in res.output
    assert snapshot(mine) == before and sorted(p.name for p in tmp_path.iterdir()) == around


def test_out_onto_an_edgeexit_bundle_with_a_users_file_added_is_refused(calibrated, tmp_path):
    out = tmp_path / "out"
    assert _export(calibrated, "--out", str(out)).exit_code == 0
    plain = tmp_path / "plain"
    shutil.copytree(out, plain)  # the bundle as a plain folder (what `cp -rL` makes)
    (plain / "notes.txt").write_text("my notes on this model")
    before = snapshot(plain)
    res = _export(calibrated, "--out", str(plain))
    assert res.exit_code == 2 and "files edgeexit did not write" in res.output and "notes.txt" in res.output
    assert snapshot(plain) == before
    # the same folder without the user's file is a bundle edgeexit wrote: replaced, and the new one loads
    (plain / "notes.txt").unlink()
    res = _export(calibrated, "--out", str(plain))
    assert res.exit_code == 0, res.output
    assert plain.is_symlink() and load_bundle(plain).manifest.files


def test_out_onto_an_edited_edgeexit_bundle_is_refused(calibrated, tmp_path):
    out = tmp_path / "out"
    assert _export(calibrated, "--out", str(out)).exit_code == 0
    plain = tmp_path / "plain"
    shutil.copytree(out, plain)
    (plain / "calibration.json").write_text('{"mine": true}')  # the user's edit of a file edgeexit wrote
    before = snapshot(plain)
    res = _export(calibrated, "--out", str(plain))
    assert res.exit_code == 2 and "calibration.json is not the file edgeexit wrote" in res.output
    assert snapshot(plain) == before


def test_out_through_a_link_to_a_users_folder_is_refused(calibrated, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text("{}")
    (tmp_path / "out").symlink_to(mine)
    before, around = snapshot(mine), sorted(p.name for p in tmp_path.iterdir())
    res = _export(calibrated, "--out", str(tmp_path / "out"))
    assert res.exit_code == 2 and "not a bundle edgeexit wrote" in res.output
    assert snapshot(mine) == before and sorted(p.name for p in tmp_path.iterdir()) == around
    assert os.readlink(tmp_path / "out") == str(mine)


# ------------------------------------------------------------------------------------------------ run directory

def test_version_pruning_keeps_a_users_look_alike_folder(calibrated, tmp_path):
    mine = calibrated / ".bundle-v1-mine"
    mine.mkdir()
    (mine / "data.csv").write_text("a,b\n1,2\n")
    assert _export(calibrated).exit_code == 0
    # a copy of a real version, with one file of the user's added, is not ours either
    copy = calibrated / ".bundle-v2-copy"
    shutil.copytree(calibrated / "bundle", copy)
    (copy / "README.txt").write_text("what I changed")
    before_mine, before_copy = snapshot(mine), snapshot(copy)
    for _ in range(3):
        res = _export(calibrated)
        assert res.exit_code == 0, res.output
    assert snapshot(mine) == before_mine and snapshot(copy) == before_copy
    assert "left" in res.output and ".bundle-v1-mine" in res.output  # reported, not silently kept
    ours = [p for p in calibrated.glob(".bundle-v*") if p.name not in (mine.name, copy.name)]
    assert len(ours) == 2  # the current version and the one before: the older ones were ours, and went
    load_bundle(calibrated / "bundle")


def _dead_writer_temp(parent: Path, name: str) -> Path:
    """A temporary directory as a writer that was killed leaves it (the process is gone when this returns)."""
    code = ("import sys, os; from pathlib import Path; from edgeexit import jsonio; "
            "t = jsonio.make_temp_dir(Path(sys.argv[1]), sys.argv[2]); (t / 'data').write_bytes(b'half'); "
            "print(t); sys.stdout.flush(); os._exit(9)")
    out = subprocess.run([sys.executable, "-c", code, str(parent), name], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.returncode == 9, out.stderr
    return Path(out.stdout.strip())


def test_taking_the_lock_removes_only_what_a_dead_writer_provably_left(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    dead_json = _dead_writer_temp(run, "calibration.json")
    dead_bundle = _dead_writer_temp(run, "bundle")
    # the user's own files and folders, some named like edgeexit's temporaries
    (run / ".notes.tmp").write_text("mine")
    (run / ".checkpoint.pt.abc123.tmp").write_text("mine too")
    fake = run / ".bundle.tmp-999999999-abcdef"
    fake.mkdir()
    (fake / "manifest.json").write_text("{")
    forged = run / f".report.md.tmp-999999999-{'0' * 32}"  # our name, but a marker that does not match it
    forged.mkdir()
    (forged / jsonio.WRITER_MARK).write_text('{"pid": 1}')
    (forged / "draft.md").write_text("mine")
    keep = {k: v for k, v in snapshot(run).items() if not k.startswith((dead_json.name, dead_bundle.name))}
    with RunDir(run).lock("train"):
        pass
    assert not dead_json.exists() and not dead_bundle.exists()
    after = snapshot(run)
    after.pop(".edgeexit.lock")
    assert after == keep


def test_a_live_writers_temp_is_left_alone(tmp_path):
    live = jsonio.make_temp_dir(tmp_path, "profile.json")  # this process: alive
    assert jsonio.clean_dead_temps(tmp_path) == [] and live.is_dir()


def test_atomic_writes_leave_nothing_behind(tmp_path):
    jsonio.write_json(tmp_path / "a.json", {"x": float("inf")})
    jsonio.write_atomic(tmp_path / "b.bin", b"\x00" * 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin"]
    assert jsonio.from_jsonable(jsonio.read_json(tmp_path / "a.json")) == {"x": float("inf")}


def test_every_written_version_carries_the_marker_in_its_files(calibrated):
    assert _export(calibrated).exit_code == 0
    b = load_bundle(calibrated / "bundle")
    assert BUNDLE_MARK in b.manifest.files and jsonio.WRITER_MARK not in b.manifest.files
    assert sorted(snapshot(b.root)) == sorted({*b.manifest.files, "manifest.json",
                                               *(str(Path(f).parent) for f in b.manifest.files if "/" in f)})


# ------------------------------------------------------------------------------------------------ unlisted files

@pytest.mark.parametrize("case", ["top_file", "kit_module", "link", "folder"])
def test_files_the_manifest_does_not_list_are_refused(built, tmp_path, case):
    b = copy_bundle(built, tmp_path)
    marker = tmp_path / "pwned"
    if case == "top_file":
        (b / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w')")
        what = "sitecustomize.py"
    elif case == "kit_module":
        (b / "onnx" / "argparse.py").write_text(f"open({str(marker)!r}, 'w')")
        what = "onnx/argparse.py"
    elif case == "link":
        os.symlink(b / "calibration.json", b / "onnx" / "calibration.json")
        what = "onnx/calibration.json"
    else:
        (b / "extra" / "deep").mkdir(parents=True)
        (b / "extra" / "deep" / "x.bin").write_bytes(b"1")
        what = "extra/deep/x.bin"
    before = snapshot(b)
    with pytest.raises(BundleError, match="does not list") as err:
        load_bundle(b)
    assert what in str(err.value.got) and err.value.hint
    res = runner.invoke(app, ["eval", str(b), "--limit", "8"])
    assert res.exit_code == 2 and "does not list" in res.output and "Traceback" not in res.output
    assert not marker.exists() and snapshot(b) == before


def test_an_empty_folder_in_a_bundle_is_harmless(built, tmp_path):
    b = copy_bundle(built, tmp_path)
    (b / "empty").mkdir()
    load_bundle(b)


# ------------------------------------------------------------------------------------------------ reference

def test_a_reference_that_names_an_exits_file_is_refused(built, tmp_path):
    b = copy_bundle(built, tmp_path)
    before = snapshot(b)

    def edit(m):
        m["reference"]["segment"]["onnx"] = dict(m["exits"][-1]["segment"]["onnx"])
    _resign(b, edit)
    with pytest.raises(BundleError, match="not the reference's own") as err:
        load_bundle(b)
    assert "reference.segment.onnx" in str(err.value)
    res = runner.invoke(app, ["eval", str(b), "--limit", "8"])
    assert res.exit_code == 2 and "reference" in res.output and "Traceback" not in res.output
    assert {k: v for k, v in snapshot(b).items() if k != "manifest.json"} == \
        {k: v for k, v in before.items() if k != "manifest.json"}


def test_a_reference_that_names_a_file_of_another_kind_is_refused(built, tmp_path):
    b = copy_bundle(built, tmp_path)
    _resign(b, lambda m: m["reference"]["segment"]["onnx"].update(file="calibration.json"))
    with pytest.raises(BundleError, match="reference.segment.onnx names calibration.json, not a .onnx file"):
        load_bundle(b)
    res = runner.invoke(app, ["eval", str(b), "--limit", "8"])
    assert res.exit_code == 2 and "not a .onnx file" in res.output and "Traceback" not in res.output


def _with_pte(raw: dict, reference_method: str | None, exit_method=lambda k: f"seg{k}") -> dict:
    """The built manifest as if it also held one multi-method program.pte (types only: no file is read)."""
    raw = json.loads(json.dumps(raw))
    raw["formats"] = [*raw["formats"], "pte"]
    for k, e in enumerate(raw["exits"]):
        e["segment"]["pte"] = {"file": "pte/program.pte", "method": exit_method(k)}
        for probe in ("head", "static"):
            if e.get(probe):
                e[probe]["segment"]["pte"] = {"file": "pte/program.pte", "method": f"{probe}{k}"}
    raw["reference"]["segment"]["pte"] = {"file": "pte/program.pte", "method": reference_method}
    return raw


def test_the_reference_method_of_a_shared_pte_must_be_the_reference(built):
    run, _ = built
    raw = json.loads((run / "bundle" / "manifest.json").read_text())
    Manifest.model_validate(_with_pte(raw, "reference"))  # what lower_pte writes
    for bad in ("seg0", "head0", None):
        with pytest.raises(ValueError, match="not the reference's own"):
            Manifest.model_validate(_with_pte(raw, bad))
    # an exit that claims the reference method makes the reference ambiguous
    with pytest.raises(ValueError, match="not the reference's own"):
        Manifest.model_validate(_with_pte(raw, "reference", lambda k: "reference" if k == 0 else f"seg{k}"))


# ------------------------------------------------------------------------------------------------ no tracebacks

def _short_names(raw):
    raw["class_names"] = raw["class_names"][:2]


TRACEBACK_CASES = {
    "1e400": (lambda raw: raw["exits"][0].update(macs="__HUGE__"), "not valid JSON", "out of range"),
    "deep_nesting": (lambda raw: None, "not valid JSON", "nesting too deep"),
    "nesting_200": (lambda raw: raw["model"].update(deep=json.loads("[" * 200 + "]" * 200)), "nested deeper",
                    "depth"),
    "short_class_names": (_short_names, "v2 schema", "class_names"),
    "batch_max_1e12": (lambda raw: raw["batch"].update(max=10**12), "v2 schema", "batch.max"),
    "batch_max_float": (lambda raw: raw["batch"].update(max=1e12), "v2 schema", "batch.max"),
    "unknown_key": (lambda raw: raw.update(surprise=1), "v2 schema", "surprise"),
    "unknown_nested_key": (lambda raw: raw["exits"][0].update(surprise=1), "v2 schema", "exits.0.surprise"),
    "huge_shape": (lambda raw: raw["exits"][0]["inputs"][0].update(shape=[-1, 2**50]), "v2 schema", "shape"),
    "huge_macs": (lambda raw: raw["exits"][0].update(macs=10**30), "v2 schema", "macs"),
    "huge_int": (lambda raw: raw["exits"][0].update(macs="__BIGINT__"), "not valid JSON", "digits"),
}


@pytest.mark.parametrize("case", sorted(TRACEBACK_CASES))
def test_manifest_values_that_used_to_end_in_a_traceback(built, tmp_path, case):
    edit, what, part = TRACEBACK_CASES[case]
    b = copy_bundle(built, tmp_path)
    raw = json.loads((b / "manifest.json").read_text())
    edit(raw)
    if case != "deep_nesting":
        try:
            raw["checksum"] = digest(raw)  # re-signed: the checksum is not what stops it
        except ValueError:
            pass
        text = json.dumps(raw).replace('"__HUGE__"', "1e400").replace('"__BIGINT__"', "9" * 5000)
    else:  # a hundred thousand nested lists: json's parser runs out of stack
        text = (b / "manifest.json").read_text().rstrip()[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"
    (b / "manifest.json").write_text(text)
    before = snapshot(b)
    with pytest.raises(BundleError, match=what) as err:
        load_bundle(b)
    assert part in str(err.value) and err.value.hint and err.value.expected is not None
    res = runner.invoke(app, ["eval", str(b), "--limit", "8"])
    assert res.exit_code == 2 and what in res.output and "Traceback" not in res.output
    assert snapshot(b) == before


# ------------------------------------------------------------------------------------------------ fuzz

FUZZ_COUNTS: dict[str, dict[str, int]] = {}


def _fuzz_load(b: Path, data: bytes, original: dict, resigned: bool, counts: dict[str, int]) -> None:
    (b / "manifest.json").write_bytes(data)
    try:
        got = load_bundle(b)
    except EdgeExitError:
        counts["refused"] = counts.get("refused", 0) + 1
        return
    counts["loaded"] = counts.get("loaded", 0) + 1
    if not resigned:  # a flip the checksum does not see must not change what is loaded
        assert got.manifest.model_dump(mode="json") == original
    else:
        assert isinstance(got.manifest, Manifest)


def _resign_bytes(data: bytes) -> tuple[bytes, bool]:
    """`data` re-signed with the checksum of what it parses to, when it parses to an object (a forger's flip)."""
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict):
            return data, False
        raw["checksum"] = digest(raw)
        return json.dumps(raw).encode(), True
    except (ValueError, RecursionError, TypeError):
        return data, False


# any byte, or (mostly) one that keeps the JSON parseable, so that re-signed flips reach the types and paths
BYTES = st.one_of(st.integers(min_value=0, max_value=255), st.sampled_from(list(b"0123456789abcdefxyz-._/ ")))
FLIPS = st.lists(st.tuples(st.integers(min_value=0), BYTES), min_size=1, max_size=4)


@pytest.mark.parametrize("resign", [False, True], ids=["plain", "resigned"])
def test_byte_flips_of_the_manifest_give_an_edgeexit_error_or_the_same_bundle(built, tmp_path, resign):
    b = copy_bundle(built, tmp_path)
    good = (b / "manifest.json").read_bytes()
    original = json.loads(good)
    counts: dict[str, int] = {}

    @settings(max_examples=400, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(flips=FLIPS, cut=st.one_of(st.none(), st.none(), st.none(), st.integers(min_value=0)))
    def fuzz(flips, cut):
        data = bytearray(good)
        for pos, value in flips:
            data[pos % len(data)] = value
        if cut is not None:
            data = data[: cut % (len(data) + 1)]
        data, resigned = _resign_bytes(bytes(data)) if resign else (bytes(data), False)
        counts["examples"] = counts.get("examples", 0) + 1
        counts["resigned"] = counts.get("resigned", 0) + int(resigned)
        _fuzz_load(b, data, original, resigned, counts)

    fuzz()
    FUZZ_COUNTS[f"bytes-{'resigned' if resign else 'plain'}"] = counts
    print(f"\nfuzz manifest bytes ({'resigned' if resign else 'plain'}): {counts}")
    assert counts["examples"] >= 400 and counts.get("refused", 0) > 0
    if resign:
        assert counts["resigned"] > 0


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for k, v in enumerate(obj):
            yield from _leaves(v, (*path, k))
    yield path


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
              st.sampled_from(["../x", "/etc/passwd", "onnx/seg0.onnx", "calibration.json", "a" * 64, "pte"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


def test_a_random_value_anywhere_in_a_resigned_manifest_gives_an_edgeexit_error_or_a_valid_bundle(built, tmp_path):
    """Past the checksum, into types and paths: any value at any place (or a key removed), re-signed."""
    b = copy_bundle(built, tmp_path)
    original = json.loads((b / "manifest.json").read_text())
    places = [p for p in _leaves(original) if p and p[0] != "checksum"]
    counts: dict[str, int] = {}

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(where=st.integers(min_value=0, max_value=len(places) - 1), value=JSON_VALUES, delete=st.booleans())
    def fuzz(where, value, delete):
        raw = json.loads(json.dumps(original))
        *head, last = places[where]
        parent = raw
        for k in head:
            parent = parent[k]
        if delete and isinstance(parent, dict):
            del parent[last]
        else:
            parent[last] = value
        raw["checksum"] = digest(raw)
        counts["examples"] = counts.get("examples", 0) + 1
        _fuzz_load(b, json.dumps(raw).encode(), original, True, counts)

    fuzz()
    FUZZ_COUNTS["values-resigned"] = counts
    print(f"\nfuzz manifest values (resigned): {counts}")
    assert counts["examples"] >= 300 and counts.get("refused", 0) > 0
