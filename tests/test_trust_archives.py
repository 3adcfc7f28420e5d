"""Nothing in a bundle's .pt2, a --weights file or a checkpoint runs code (issue 16, "One rule for every archive").

Each test crafts the hostile file for real (a payload that, if run, creates a marker file or overwrites a victim
file), and asserts the error class, the CLI exit code, the key parts of the message, that the payload did not run
and that no earlier artifact changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import copy_bundle, copy_run
from torch import nn
from typer.testing import CliRunner

from edgeexit.bundle import digest, load_bundle
from edgeexit.cli import app
from edgeexit.errors import BundleError, CheckpointError
from edgeexit.models.user import PassedModel, check_stored_spec
from edgeexit.models.weights import read_weights
from edgeexit.runtime.torch_pt2 import check_pt2, load_program
from edgeexit.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

runner = CliRunner()
SPEC = "test_trust_archives:build_small"
DATA = ["--dataset", "synthetic", "--image-size", "16", "--limit-train", "64", "--limit-val", "32",
        "--limit-test", "32", "--batch-size", "32", "--device", "cpu", "--epochs", "1"]
USER = ["--model", SPEC, "--exits", "0"]


class Opener:
    """A pickle payload: unpickling it calls open(marker, "w"), which creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def payload(marker: Path, pad: int = 4) -> bytes:
    """The pickle, padded after its STOP opcode so torch sees whole float32 elements (the unpickler ignores the pad)."""
    blob = pickle.dumps(Opener(marker))
    return blob + b"." * (-len(blob) % pad)


def build_small(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, but the run directory's lock (edgeexit's own, taken by each command)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".edgeexit.lock"}


META = {"dtype": 7, "sizes": [{"as_int": 1}], "requires_grad": False, "device": {"type": "cpu", "index": None},
        "strides": [{"as_int": 1}], "storage_offset": {"as_int": 0}, "layout": 7}


def rewrite(src: Path, dst: Path, *, edit=None, add: dict[str, bytes] | None = None, drop=(),
            add_raw: dict[str, bytes] | None = None) -> None:
    """`src` copied to `dst` entry by entry: `edit(rel, data) -> data` on each entry (rel: path inside the root
    folder), the entries of `add` appended (names inside the root) and of `add_raw` (whole names; `{root}` is the
    root folder, `{ROOT}` the same in upper case), those in `drop` left out."""
    import warnings

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names some cases write on purpose
        root = zin.namelist()[0].split("/")[0]
        for item in zin.infolist():
            rel = item.filename[len(root) + 1:]
            if rel in drop:
                continue
            data = zin.read(item.filename)
            zout.writestr(item, edit(rel, data) if edit else data)
        for rel, data in (add or {}).items():
            zout.writestr(f"{root}/{rel}", data)
        for name, data in (add_raw or {}).items():
            zout.writestr(name.format(root=root, ROOT=root.upper()), data)


def opaque_config(rel: str, data: bytes) -> bytes:
    """The constants config naming an opaque object: torch unpickles it with plain pickle.loads."""
    if rel.endswith("model_constants_config.json"):
        return json.dumps({"config": {"evil": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": False,
                                               "tensor_meta": META}}}).encode()
    return data


def upper_case_opaque(src: Path, dst: Path, marker: Path) -> None:
    """The issue's case: the entry is `OPAQUE_OBJ_0`, which torch's case-insensitive zip reader finds as opaque_obj_0."""
    rewrite(src, dst, edit=opaque_config, add={"data/constants/OPAQUE_OBJ_0": payload(marker)})


def resign(bundle: Path) -> None:
    """Recompute every file's sha256 and the manifest checksum, as an attacker would."""
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["files"] = {name: hashlib.sha256((bundle / name).read_bytes()).hexdigest() for name in raw["files"]}
    raw["checksum"] = digest(raw)
    (bundle / "manifest.json").write_text(json.dumps(raw))


# ---------------------------------------------------------------------------------------------- bundle .pt2

def test_an_upper_case_opaque_object_in_a_resigned_bundle_never_runs(built, tmp_path):
    bundle = copy_bundle(built, tmp_path)
    marker = tmp_path / "pwned"
    seg = bundle / "pt2" / "seg0.pt2"
    (tmp_path / "orig.pt2").write_bytes(seg.read_bytes())
    upper_case_opaque(tmp_path / "orig.pt2", seg, marker)
    resign(bundle)
    load_bundle(bundle)  # the forgery passes the bundle's own checks: only the .pt2 check stands in the way
    before = tree_hashes(bundle)
    for args in (["compare", str(bundle), "--samples", "8"],
                 ["eval", str(bundle), "--backend", "torch", "--limit", "8"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert "seg0.pt2 holds content that could run code" in res.output and "Traceback" not in res.output
        if args[0] == "eval":  # compare wraps the error as "backend torch cannot run this bundle", without `got`
            assert "OPAQUE_OBJ_0" in res.output and "allow-list" in res.output
        assert not marker.exists()
        assert tree_hashes(bundle) == before
    with pytest.raises(BundleError, match="outside the allow-list"):
        load_program(seg)
    assert not marker.exists()


def _variants(marker: Path) -> dict[str, dict]:
    """More ways into torch's loader, each refused by name before torch reads anything."""
    code = f"open({str(marker)!r}, 'w')"

    def program(edit):
        def go(rel, data):
            if rel != "models/model.json":
                return data
            raw = json.loads(data)
            edit(raw)
            return json.dumps(raw).encode()
        return go

    def first_expr(raw, value):
        todo = [raw]
        while todo:
            obj = todo.pop()
            if isinstance(obj, dict):
                if "expr_str" in obj:
                    obj["expr_str"] = value
                    return
                todo.extend(obj.values())
            elif isinstance(obj, list):
                todo.extend(obj)
        raise AssertionError("no shape expression to replace")

    def first_target(raw, value):
        raw["graph_module"]["graph"]["nodes"][0]["target"] = value

    return {
        "lower-case opaque object named by the config": dict(
            edit=opaque_config, add={"data/constants/opaque_obj_0": payload(marker)}, why="outside the allow-list"),
        "opaque object under an upper-case root": dict(
            edit=opaque_config, add={"DATA/constants/opaque_obj_0": payload(marker)}, why="outside the allow-list"),
        "two names torch reads as one": dict(
            add={"data/weights/WEIGHT_0": payload(marker)}, why="two entries torch reads as one"),
        "the same name twice in the central directory": dict(
            add={"data/weights/weight_0": payload(marker)}, why="two entries torch reads as one"),
        "opaque object under the root in upper case": dict(
            edit=opaque_config, add_raw={"{ROOT}/data/constants/opaque_obj_0": payload(marker)},
            why="outside the root folder"),
        "a path with a dot segment": dict(
            add_raw={"{root}/./data/constants/opaque_obj_0": payload(marker)}, edit=opaque_config,
            why="outside the allow-list"),
        "pickled weight (use_pickle)": dict(
            edit=lambda rel, data: data.replace(b'"use_pickle": false', b'"use_pickle": true', 1)
            if rel.endswith("model_weights_config.json") else data, why="use_pickle must be false"),
        "legacy pickled weights file": dict(add={"data/weights/model.pt": payload(marker)}, why="outside the allow-list"),
        "guard code": dict(edit=program(lambda raw: raw.__setitem__("guards_code", [code])), why="guard code"),
        "shape expression that sympify would eval": dict(
            edit=program(lambda raw: first_expr(raw, f"__import__('builtins').{code}")), why="shape expression"),
        "shape expression built from chr": dict(
            edit=program(lambda raw: first_expr(raw, "eval(chr(49))")), why="shape expression"),
        "operator outside aten/prims": dict(
            edit=program(lambda raw: first_target(raw, "builtins.exec")), why="the operator"),
        "attribute chain behind an aten prefix": dict(
            edit=program(lambda raw: first_target(raw, "torch.ops.aten.conv2d.default.__class__")), why="the operator"),
        "_operator that calls anything": dict(
            edit=program(lambda raw: first_target(raw, "_operator.call")), why="the operator"),
        "custom object input": dict(
            edit=program(lambda raw: raw["graph_module"]["graph"].__setitem__("custom_obj_values", {"x": {"name": "x"}})),
            why="custom object"),
    }


@pytest.mark.parametrize("case", list(_variants(Path("m"))))
def test_pt2_variants_are_refused_before_torch_reads_them(built, tmp_path, case):
    run, _ = built
    marker = tmp_path / "pwned"
    spec = _variants(marker)[case]
    evil = tmp_path / "seg0.pt2"
    rewrite(run / "bundle" / "pt2" / "seg0.pt2", evil, edit=spec.get("edit"), add=spec.get("add"),
            add_raw=spec.get("add_raw"))
    before = evil.read_bytes()
    with pytest.raises(BundleError, match="could run code") as err:
        load_program(evil)
    assert spec["why"] in str(err.value) and "allow-list" in str(err.value)
    assert not marker.exists() and evil.read_bytes() == before
    check_pt2(run / "bundle" / "pt2" / "seg0.pt2")  # what edgeexit writes passes


def test_pickled_sample_inputs_are_never_given_to_torch(built, tmp_path):
    """torch.export.save writes the sample inputs as a pickle and torch.load falls back to a full unpickler on them;
    the rebuilt archive torch reads has them empty, so the program loads and the payload never runs."""
    run, _ = built
    marker = tmp_path / "pwned"
    evil = tmp_path / "seg0.pt2"
    buf = io.BytesIO()
    torch.save(Opener(marker), buf)
    rewrite(run / "bundle" / "pt2" / "seg0.pt2", evil,
            edit=lambda rel, data: buf.getvalue() if rel == "data/sample_inputs/model.pt" else data)
    program = load_program(evil)
    assert program.example_inputs is None and not marker.exists()
    with pytest.raises(Exception):  # the payload is real: a plain weights_only=False load runs it
        torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    assert marker.exists()


# ---------------------------------------------------------------------------------------------- --weights

def _run_with_earlier_artifact(built, tmp_path) -> tuple[Path, dict[str, str]]:
    run = copy_run(built, tmp_path / "run")
    return run, tree_hashes(run)


def test_weights_as_a_hostile_torch_export_archive_is_refused(built, tmp_path):
    marker = tmp_path / "pwned"
    clean = tmp_path / "clean.pt2"
    torch.export.save(torch.export.export(build_small().eval(), (torch.zeros(1, 3, 16, 16),)), str(clean))
    assert set(read_weights(clean)) == set(build_small().state_dict())  # a clean archive loads
    evil = tmp_path / "evil.pt2"
    upper_case_opaque(clean, evil, marker)
    with pytest.raises(CheckpointError, match="could run code") as err:
        read_weights(evil)
    assert "OPAQUE_OBJ_0" in str(err.value) and "torch.export.save" in str(err.value)
    run, before = _run_with_earlier_artifact(built, tmp_path)
    res = runner.invoke(app, ["train", "--run-dir", str(run), *USER, "--weights", str(evil), *DATA])
    assert res.exit_code == 2 and "evil.pt2 holds content that could run code" in res.output, res.output
    assert "Traceback" not in res.output and not marker.exists() and tree_hashes(run) == before


class SetState(nn.Module):
    """A TorchScript module whose __setstate__ maps `victim` shared and overwrites it (runs in torch.jit.load)."""

    def __init__(self, victim: str):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2))
        self.victim = victim
        self.mapped = torch.zeros(4, dtype=torch.uint8)

    def forward(self, x):
        return x + self.weight

    @torch.jit.export
    def __getstate__(self):
        return (self.weight, self.victim, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]):
        self.weight = state[0]
        self.victim = state[1]
        self.training = state[2]
        self.mapped = torch.from_file(state[1], shared=True, size=4, dtype=torch.uint8)
        self.mapped.fill_(33)


def test_weights_as_a_torchscript_archive_never_runs_its_setstate(built, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    path = tmp_path / "model.pt"
    torch.jit.script(SetState(str(victim))).save(str(path))
    with pytest.raises(CheckpointError, match="TorchScript archive; loading it would run its code") as err:
        read_weights(path)
    assert "torch.save(torch.jit.load(path).state_dict()" in str(err.value)
    run, before = _run_with_earlier_artifact(built, tmp_path)
    res = runner.invoke(app, ["train", "--run-dir", str(run), *USER, "--weights", str(path), *DATA])
    assert res.exit_code == 2 and "TorchScript" in res.output and "Traceback" not in res.output, res.output
    assert victim.read_text() == "mine" and tree_hashes(run) == before
    # the payload is real: torch.jit.load itself overwrites the victim
    torch.jit.load(str(path))
    assert victim.read_text() == "!!!!"


# ---------------------------------------------------------------------------------------------- checkpoints

def _hostile_checkpoint(built, tmp_path, spec: str, kwargs: dict) -> tuple[Path, dict[str, str]]:
    run = copy_run(built, tmp_path / "run", names=("checkpoint.pt", "calibration.json"))
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["model_config"] = {**ckpt["model_config"], "model": spec, "model_kwargs": kwargs}
    save_checkpoint(run / "checkpoint.pt", {k: v for k, v in ckpt.items() if k != "format"})
    return run, tree_hashes(run)


PAYLOADS = {
    "subprocess:getoutput": lambda marker: {"cmd": f"touch {marker}"},
    "subprocess:run": lambda marker: {"args": ["touch", str(marker)]},
    "os:system": lambda marker: {"command": f"touch {marker}"},
}


@pytest.mark.parametrize("spec", list(PAYLOADS))
@pytest.mark.parametrize("stage", ["calibrate", "prune", "export"])
def test_a_callable_named_in_a_checkpoint_is_never_called(built, tmp_path, spec, stage):
    marker = tmp_path / "pwned"
    run, before = _hostile_checkpoint(built, tmp_path, spec, PAYLOADS[spec](marker))
    res = runner.invoke(app, [stage, "--run-dir", str(run)])
    assert res.exit_code == 2, res.output
    assert "names its model by a function" in res.output and f"pass --model {spec}" in res.output
    assert "Traceback" not in res.output and not marker.exists() and tree_hashes(run) == before
    with pytest.raises(CheckpointError, match="never calls a function named in a file"):
        model_from_checkpoint(load_checkpoint(run / "checkpoint.pt"))
    assert not marker.exists()


def test_another_model_passed_again_is_refused(built, tmp_path):
    marker = tmp_path / "pwned"
    run, before = _hostile_checkpoint(built, tmp_path, "subprocess:getoutput", {"cmd": f"touch {marker}"})
    res = runner.invoke(app, ["calibrate", "--run-dir", str(run), "--model", SPEC])
    assert res.exit_code == 2 and "--model differs" in res.output and "subprocess:getoutput" in res.output, res.output
    res = runner.invoke(app, ["export", "--run-dir", str(run), "--model", "subprocess:getoutput",
                              "--model-kwargs", '{"cmd": "true"}'])
    assert res.exit_code == 2 and "--model-kwargs differ" in res.output, res.output
    assert not marker.exists() and tree_hashes(run) == before


def test_registered_builders_need_nothing_passed_again():
    check_stored_spec(None, None, None, where="the checkpoint")  # a built-in backbone
    check_stored_spec("torchvision:resnet18", {"num_classes": 10}, None, where="the checkpoint")
    check_stored_spec(SPEC, {"num_classes": 3}, PassedModel(SPEC), where="the checkpoint")  # passed again
    with pytest.raises(CheckpointError, match="differs"):
        check_stored_spec(None, None, PassedModel(SPEC), where="the checkpoint")


def test_a_user_model_checkpoint_runs_its_stages_with_model_passed_again(tmp_path):
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "--run-dir", str(run), *USER, *DATA])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["calibrate", "--run-dir", str(run), "--budget", "1.0"])
    assert res.exit_code == 2 and f"pass --model {SPEC} again" in res.output and not (run / "calibration.json").exists()
    res = runner.invoke(app, ["calibrate", "--run-dir", str(run), "--budget", "1.0", "--model", SPEC])
    assert res.exit_code == 0, res.output
