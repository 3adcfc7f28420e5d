"""`edgeexit glue --out DIR`: the device glue (C++ runner, Android module, Swift package, Jetson notes) copied out of
the installed package, byte for byte, with what to do next; a folder of the user's is never overwritten, a previous
copy is brought up to date, and the C++ runner builds from the copied tree (tests/test_cpp_runner.py's build is that
build, made once per session)."""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeexit.cli import app
from edgeexit.glue import TREES, glue_root
from edgeexit.glue.copyout import MARKER
from edgeexit.tomlfiles import read

ROOT = Path(__file__).resolve().parents[1]


def glue(out: Path, *args: str):
    return CliRunner().invoke(app, ["glue", "--out", str(out), *args])


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def package_files(trees) -> dict[str, str]:
    root = glue_root()
    return {k: v for k, v in snapshot(root).items() if k.split("/")[0] in trees}


def test_glue_copies_every_tree_byte_for_byte(tmp_path):
    out = tmp_path / "glue"
    res = glue(out)
    assert res.exit_code == 0, res.output
    got = snapshot(out)
    assert got.pop(MARKER)
    assert got == package_files(TREES["all"])
    for must in ("executorch/CMakeLists.txt", "executorch/include/edgeexit.h", "executorch/src/runner_main.cpp",
                 "executorch/schema/manifest.schema.json", "android/edgeexit/build.gradle.kts",
                 "android/edgeexit/src/main/kotlin/dev/edgeexit/ImageInput.kt", "android/README.md",
                 "ios/Package.swift", "ios/Sources/EdgeExit/ImageInput.swift", "jetson/README.md"):
        assert must in got, must
    assert f"cmake -S {out}/executorch" in res.output and "--runner-binary" in res.output, res.output
    again = glue(out)  # up to date: nothing rewritten, file times kept (an incremental build stays incremental)
    assert again.exit_code == 0 and "0 files written" in again.output, again.output


@pytest.mark.parametrize("what", ["executorch", "android", "ios", "jetson"])
def test_glue_what_copies_a_tree_and_what_it_builds_on(what, tmp_path):
    res = glue(tmp_path / "g", "--what", what)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "g").iterdir() if p.name != MARKER) == sorted(TREES[what])


def test_glue_refuses_a_folder_of_other_files_and_changes_nothing(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    res = glue(out)
    assert res.exit_code == 2 and "not an edgeexit glue copy" in res.output, res.output
    assert "Traceback" not in res.output and snapshot(out) == before
    (tmp_path / "file").write_text("x")
    res = glue(tmp_path / "file")
    assert res.exit_code == 2 and "--out is a file" in res.output, res.output


def test_glue_updates_its_own_copy_and_keeps_the_users_files(tmp_path):
    out = tmp_path / "glue"
    assert glue(out, "--what", "executorch").exit_code == 0
    (out / "build").mkdir()
    (out / "build" / "CMakeCache.txt").write_text("the user's build")
    # a file as an older edgeexit wrote it: recorded in the marker, so it is edgeexit's to replace
    readme = out / "executorch" / "README.md"
    readme.write_text("an older README")
    marker = json.loads((out / MARKER).read_text())
    marker["files"]["executorch/README.md"].append(hashlib.sha256(b"an older README").hexdigest())
    (out / MARKER).write_text(json.dumps(marker))
    res = glue(out, "--what", "executorch")
    assert res.exit_code == 0 and "1 files written" in res.output, res.output
    assert readme.read_bytes() == (glue_root() / "executorch" / "README.md").read_bytes()
    assert (out / "build" / "CMakeCache.txt").read_text() == "the user's build"
    # the user's edit of a copied file, and a user's file where a new glue file goes: refused, nothing written
    (out / "executorch" / "CMakeLists.txt").write_text("# my tuned build\n")
    (out / "android").mkdir()
    (out / "android" / "README.md").write_text("my notes")
    before = snapshot(out)
    res = glue(out, "--what", "android")
    assert res.exit_code == 2, res.output
    assert "nothing was written" in res.output and "executorch/CMakeLists.txt (edited since edgeexit wrote it)" in \
        res.output and "android/README.md (not written by edgeexit)" in res.output, res.output
    assert snapshot(out) == before


def test_glue_rejects_an_unknown_tree(tmp_path):
    res = glue(tmp_path / "g", "--what", "windows")
    assert res.exit_code == 2 and "unknown --what" in res.output and not (tmp_path / "g").exists(), res.output


def test_the_wheel_ships_every_glue_file():
    """pyproject's package-data globs for edgeexit.glue match every file of the trees (a wheel carries them; the
    wheel test of issue 21 installs one)."""
    patterns = read(ROOT / "pyproject.toml", "pyproject")["tool"]["setuptools"]["package-data"]["edgeexit.glue"]
    root = glue_root()
    matched = {Path(m).as_posix() for pattern in patterns for m in glob.glob(pattern, root_dir=root, recursive=True)
               if (root / m).is_file()}
    assert matched == set(package_files(TREES["all"])), set(package_files(TREES["all"])) ^ matched
    assert not list(ROOT.glob("targets/*/")), "the glue lives in edgeexit/glue now"


def test_the_runner_builds_from_the_copied_tree(tmp_path_factory):
    """The session's C++ build (shared with test_cpp_runner.py and test_android_jvm.py) is of a tree `edgeexit glue`
    wrote, not of the checkout."""
    from test_cpp_runner import build_cpp

    build = build_cpp(tmp_path_factory.getbasetemp())
    cache = (build / "CMakeCache.txt").read_text()
    home = Path(next(line.split("=", 1)[1] for line in cache.splitlines()
                     if line.startswith("CMAKE_HOME_DIRECTORY:")))
    assert home.name == "executorch" and (home.parent / MARKER).is_file(), home
    assert snapshot(home) == {k.removeprefix("executorch/"): v for k, v in package_files(["executorch"]).items()}
    assert (build / "edgeexit_runner").is_file() and (build / "libedgeexit.so").is_file()
