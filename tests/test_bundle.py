"""Bundle v2: the typed manifest and its JSON Schema, every refusal on load, atomic replacement, --out safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jsonschema
import numpy as np
import pytest
from conftest import copy_bundle, copy_run
from typer.testing import CliRunner

from edgeexit.bundle import SCHEMA_FILE, digest, load_bundle
from edgeexit.cli import app
from edgeexit.errors import BundleError

runner = CliRunner()



def _resign(bundle, edit):
    """Edit manifest.json with `edit(raw)` and recompute its checksum, as a forger would."""
    raw = json.loads((bundle / "manifest.json").read_text())
    edit(raw)
    raw["checksum"] = digest(raw)
    (bundle / "manifest.json").write_text(json.dumps(raw))


def test_manifest_round_trips_and_validates_against_its_json_schema(built):
    run, _ = built
    b = load_bundle(run / "bundle")
    raw = json.loads((b.root / "manifest.json").read_text())
    schema = json.loads((b.root / SCHEMA_FILE).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(raw, schema)
    assert b.manifest.model_dump(mode="json") == raw  # nothing is lost or added on the way through the types
    assert "Infinity" not in (b.root / "manifest.json").read_text() and "NaN" not in (b.root / "manifest.json").read_text()
    assert b.manifest.exits[-1].threshold is None and all(e.inputs and e.outputs for e in b.manifest.exits)
    # the schema rejects what the types reject: a string threshold
    raw["exits"][0]["threshold"] = "high"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, schema)


def _outside_file(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not part of any bundle")
    return secret


@pytest.mark.parametrize("case", ["absolute", "dotdot", "reference_unlisted", "wrong_type", "nan_threshold",
                                  "schema_999", "v1", "link_out"])
def test_bad_manifests_are_refused_before_anything_is_loaded(built, tmp_path, case):
    b = copy_bundle(built, tmp_path)
    secret = _outside_file(tmp_path)
    expect = {"absolute": "outside the bundle", "dotdot": "outside the bundle", "reference_unlisted": "does not list",
              "wrong_type": "does not match the v2 schema", "nan_threshold": "does not match the v2 schema",
              "schema_999": "unknown schema version", "v1": "v1 bundle", "link_out": "leads outside"}[case]
    if case == "absolute":
        _resign(b, lambda m: m["files"].update({str(secret): "0" * 64}))
    elif case == "dotdot":
        _resign(b, lambda m: m["files"].update({"../secret.txt": "0" * 64}))
    elif case == "reference_unlisted":
        def edit(m):
            m["reference"]["segment"]["onnx"]["file"] = "onnx/elsewhere.onnx"
        _resign(b, edit)
    elif case == "wrong_type":
        _resign(b, lambda m: m["exits"][0].update(macs="many"))
    elif case == "nan_threshold":
        raw = (b / "manifest.json").read_text()
        m = json.loads(raw)
        m["exits"][0]["threshold"] = float("nan")
        m["checksum"] = "0" * 64
        text = json.dumps(m)  # writes NaN, as a careless tool would
        (b / "manifest.json").write_text(text)
        expect = "not valid JSON"
    elif case == "schema_999":
        _resign(b, lambda m: m.update(schema_version=999))
    elif case == "v1":
        raw = json.loads((b / "manifest.json").read_text())
        (b / "manifest.json").write_text(json.dumps({"schema": "edgeexit.bundle/1", "exits": raw["exits"]}))
    elif case == "link_out":
        os.symlink(secret, b / "onnx" / "evil.onnx")
        _resign(b, lambda m: m["files"].update({"onnx/evil.onnx": "0" * 64}))
    with pytest.raises(BundleError, match=expect) as err:
        load_bundle(b)
    assert "hint" in str(err.value)
    res = runner.invoke(app, ["eval", str(b)])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_a_nan_threshold_is_refused_by_the_types_too(built, tmp_path):
    """Even re-signed with a valid checksum, a non-finite threshold fails validation: JSON has no NaN, and the
    strings "nan" / "inf" must not become one."""
    b = copy_bundle(built, tmp_path)
    for bad in ("nan", "inf", "-inf"):
        _resign(b, lambda m: m["exits"][0].update(threshold=bad))
        with pytest.raises(BundleError, match="v2 schema"):
            load_bundle(b)


def test_v1_error_says_how_to_re_export(built, tmp_path):
    b = copy_bundle(built, tmp_path)
    (b / "manifest.json").write_text(json.dumps({"schema": "edgeexit.bundle/1"}))
    with pytest.raises(BundleError) as err:
        load_bundle(b)
    assert "edgeexit export --run-dir" in err.value.hint


def test_export_out_never_replaces_a_users_directory(built, tmp_path):
    run = copy_run(built, tmp_path / "run", ("checkpoint.pt",))
    assert runner.invoke(app, ["calibrate", "--run-dir", str(run), "--budget", "0.7"]).exit_code == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    res = runner.invoke(app, ["export", "--run-dir", str(run), "--out", str(mine)])
    assert res.exit_code == 2 and "not an edgeexit bundle" in res.output
    assert (mine / "thesis.tex").read_text() == "years of work" and sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    (tmp_path / "afile").write_text("x")
    assert runner.invoke(app, ["export", "--run-dir", str(run), "--out", str(tmp_path / "afile")]).exit_code == 2
    # an empty directory, and an existing bundle, are fine
    (tmp_path / "empty").mkdir()
    for out in ("empty", "empty"):
        res = runner.invoke(app, ["export", "--run-dir", str(run), "--out", str(tmp_path / out)])
        assert res.exit_code == 0, res.output
        load_bundle(tmp_path / out)


def test_files_respect_the_umask(built, tmp_path):
    run = copy_run(built, tmp_path / "run", ("checkpoint.pt",))
    assert runner.invoke(app, ["calibrate", "--run-dir", str(run), "--budget", "0.7"]).exit_code == 0
    old = os.umask(0o027)
    try:
        res = runner.invoke(app, ["export", "--run-dir", str(run)])
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    b = load_bundle(run / "bundle")
    assert (os.stat(b.root).st_mode & 0o777) == 0o750
    assert {os.stat(b.root / rel).st_mode & 0o777 for rel in b.manifest.files} == {0o640}


CRASH = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import edgeexit.bundle.store as store
    from edgeexit.bundle import load_bundle, write_bundle
    step, dest = int(sys.argv[1]), Path(sys.argv[2])
    calls = {"n": 0}
    def crash_on(name, real):
        def wrapped(*a, **k):
            calls["n"] += 1
            if calls["n"] == step:
                os._exit(3)  # the process dies here: no cleanup runs
            return real(*a, **k)
        return wrapped
    store.os = type("os", (), {**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")},
                               "replace": crash_on("replace", os.replace), "symlink": crash_on("symlink", os.symlink)})
    store.fsync_dir = crash_on("fsync_dir", store.fsync_dir)
    old = load_bundle(dest)
    fields = old.manifest.model_dump(mode="json", exclude={"schema_version", "files", "checksum"})
    fields["edgeexit_version"] = "new"
    def populate(tmp):
        for rel in old.manifest.files:
            if rel != "manifest.schema.json":
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes((old.root / rel).read_bytes())
    write_bundle(dest, fields, populate)
    print("finished")
""")


def test_a_crash_at_any_step_of_a_replacement_leaves_a_loadable_bundle(built, tmp_path):
    run = copy_run(built, tmp_path / "run", ("checkpoint.pt",))
    assert runner.invoke(app, ["calibrate", "--run-dir", str(run), "--budget", "0.7"]).exit_code == 0
    assert runner.invoke(app, ["export", "--run-dir", str(run)]).exit_code == 0
    script = tmp_path / "crash.py"
    script.write_text(CRASH)
    seen = set()
    for step in range(1, 40):
        out = subprocess.run([sys.executable, str(script), str(step), str(run / "bundle")], capture_output=True, text=True)
        assert out.returncode in (0, 3), out.stderr
        version = load_bundle(run / "bundle").manifest.edgeexit_version  # old or new, never none
        seen.add((out.returncode, version))
        if out.returncode == 0:
            break
    assert (3, "0.1.0") in seen and (0, "new") in seen
    # the dead writers' temporary directories are gone after the next successful write
    assert runner.invoke(app, ["export", "--run-dir", str(run)]).exit_code == 0
    assert not list(run.glob(".bundle.tmp-*"))
    assert len([p for p in run.glob(".bundle-v*")]) <= 2


def test_the_target_drives_batch_range_precision_and_delegate(built, tmp_path, monkeypatch):
    """A target's batch range becomes the programs' dynamic batch and the manifest's; its delegate picks the default
    backend; and a CUDA bundle never runs silently on the CPU."""
    from edgeexit.errors import RuntimeMissingError
    from edgeexit.runtime import EarlyExitRuntime

    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "small.toml").write_text('name = "small"\ndescription = "a device that takes 4 images at most"\n'
                                        'formats = ["onnx"]\nprecision = ["fp32"]\ndelegate = "CPUExecutionProvider"\n'
                                        'batch = { min = 1, max = 4 }\nprofile = "host"\nrequires = ["onnxruntime"]\n'
                                        'needs_gpu = false\n')
    (targets / "gpu.toml").write_text((targets / "small.toml").read_text().replace('"small"', '"gpu"')
                                      .replace('"CPUExecutionProvider"', '"CUDAExecutionProvider"'))
    monkeypatch.setenv("EDGEEXIT_TARGETS_DIR", str(targets))
    run = copy_run(built, tmp_path / "run", ("checkpoint.pt",))
    assert runner.invoke(app, ["calibrate", "--run-dir", str(run), "--budget", "0.7"]).exit_code == 0
    res = runner.invoke(app, ["export", "--run-dir", str(run), "--target", "small"])
    assert res.exit_code == 0, res.output
    b = load_bundle(run / "bundle")
    assert b.manifest.batch.max == 4 and b.manifest.target == "small"
    import onnx

    dim = onnx.load(str(b.path("onnx/seg0.onnx"))).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param  # dynamic, bounded by the program's range
    rt = EarlyExitRuntime.open(b)
    assert rt.backend.name == "onnxruntime" and rt.max_batch == 4
    x = np.random.default_rng(0).standard_normal((10, *b.input_shape)).astype(np.float32)
    assert len(rt.run(x).predictions) == 10  # runs in chunks of the target's largest batch
    res = runner.invoke(app, ["export", "--run-dir", str(run), "--target", "gpu", "--out", str(tmp_path / "gpu")])
    assert res.exit_code == 0, res.output
    with pytest.raises(RuntimeMissingError, match="CUDAExecutionProvider"):
        EarlyExitRuntime.open(tmp_path / "gpu")
    res = runner.invoke(app, ["eval", str(tmp_path / "gpu"), "--limit", "16"])
    assert res.exit_code == 2 and "onnxruntime-gpu" in res.output
    res = runner.invoke(app, ["eval", str(tmp_path / "gpu"), "--limit", "16", "--backend", "onnxruntime"])
    assert res.exit_code == 0, res.output  # CPU emulation, when asked for by name
