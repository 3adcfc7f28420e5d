"""`edgeexit glue --out DIR`: the device glue copied out of the installed package into a folder of the user's.

A user's files are never overwritten or deleted. DIR must be absent, empty, or a previous glue copy: one holding
`.edgeexit-glue.json`, which records every file a copy wrote and the sha256 of each version it wrote. Into such a
copy, a file is written when it is absent or still holds a version edgeexit wrote; one the user edited, or any other
file in the way, stops the whole copy before anything is written. Files already up to date are not touched (their
times stay, so an incremental build stays incremental); files a newer edgeexit no longer ships are left where they are.
Each file is written to a temporary name and renamed, and the record is written before the files, so an interrupted
copy is completed by running it again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edgeexit.errors import ConfigError

MARKER = ".edgeexit-glue.json"
FORMAT = "edgeexit-glue/1"
# what each --what copies: the Android module and the Swift package build the C++ core beside them (android's
# CMakeLists finds it at ../../../../../executorch; the iOS README builds it from executorch/)
TREES: dict[str, tuple[str, ...]] = {
    "executorch": ("executorch",),
    "android": ("android", "executorch"),
    "ios": ("ios", "executorch"),
    "jetson": ("jetson",),
    "all": ("executorch", "android", "ios", "jetson"),
}
SKIP = {"__pycache__"}


def glue_root() -> Path:
    """The package folder holding the glue trees (a real directory in a wheel or an editable install)."""
    return Path(str(resources.files("edgeexit.glue")))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sources(trees: tuple[str, ...]) -> dict[str, Path]:
    """Relative POSIX path -> file in the package, for every file of `trees`."""
    root = glue_root()
    files: dict[str, Path] = {}
    for tree in trees:
        if not (root / tree).is_dir():
            raise ConfigError("this edgeexit installation lacks its device glue", got=str(root / tree),
                              expected=f"the {tree} tree inside the edgeexit package",
                              hint="reinstall edgeexit from a wheel or a checkout that ships edgeexit/glue")
        for f in sorted((root / tree).rglob("*")):
            if f.is_file() and not SKIP.intersection(f.relative_to(root).parts):
                files[f.relative_to(root).as_posix()] = f
    return files


def _record(out: Path) -> dict[str, list[str]]:
    """The files a previous copy wrote (path -> sha256s of the versions written); {} for an absent or empty DIR."""
    if not out.exists():
        return {}
    if not out.is_dir():
        raise ConfigError("--out is a file", got=str(out), expected="a folder (absent, empty or a previous glue copy)")
    marker = out / MARKER
    if not marker.is_file():
        if any(out.iterdir()):
            raise ConfigError("--out is a folder of other files, not an edgeexit glue copy", got=str(out),
                              expected=f"an absent or empty folder, or one `edgeexit glue` wrote (it holds {MARKER})",
                              hint="pick another --out; edgeexit never overwrites or deletes files it did not write")
        return {}
    try:
        raw = json.loads(marker.read_text(encoding="utf-8"))
        files = raw["files"] if raw.get("format") == FORMAT else None
        if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, list)
                                                  and all(isinstance(s, str) for s in v) for k, v in files.items()):
            raise ValueError("unexpected content")
    except (OSError, ValueError, KeyError, AttributeError) as err:
        raise ConfigError(f"{MARKER} in --out is not a glue record", got=f"{marker}: {err}",
                          expected=f"the {FORMAT} record `edgeexit glue` writes",
                          hint="pick another --out; edgeexit never overwrites files it cannot tell are its own") from None
    return files


@dataclass
class GlueCopy:
    """What `copy_glue` did: the trees, and the files written, left as they were (up to date) or kept."""

    out: Path
    trees: tuple[str, ...]
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """What was copied and what to do next, for the terminal."""
        out = self.out
        lines = [f"edgeexit glue: {len(self.written)} files written, {len(self.unchanged)} already up to date, "
                 f"in {out} ({', '.join(self.trees)})", "", "Next:"]
        if "executorch" in self.trees:
            spec = importlib.util.find_spec("executorch")  # finds the package without importing it
            et = (f"{next(iter(spec.submodule_search_locations))}/share/cmake"
                  if spec and spec.submodule_search_locations else "<pip install 'edgeexit[executorch]' first>")
            lines += ["  C++ runner on this machine (needs cmake >= 3.28, flatc, nlohmann-json, valijson; "
                      f"{out}/executorch/README.md):",
                      f"    cmake -S {out}/executorch -B {out}/build -DCMAKE_BUILD_TYPE=Release -Dexecutorch_DIR={et}",
                      f"    cmake --build {out}/build --target edgeexit_runner",
                      "  for a phone, build it with the Android NDK (the README's \"Cross-compiling for Android\"), then",
                      "    edgeexit profile --run-dir RUN --device adb://SERIAL --runner-binary PATH/TO/edgeexit_runner",
                      "    (it pushes the runner with the shared libraries it needs)"]
        if "android" in self.trees:
            lines += [f"  Android: add {out}/android/edgeexit to your app as a module, set the gradle properties of "
                      f"{out}/android/README.md"]
        if "ios" in self.trees:
            lines += [f"  iOS: build EdgeExitCore.xcframework, then add the Swift package {out}/ios "
                      f"({out}/ios/README.md)"]
        if "jetson" in self.trees:
            lines += [f"  Jetson: {out}/jetson/README.md (edgeexit engines builds the TensorRT engines on the device)"]
        return "\n".join(lines)


def _write(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text(text: str, dest: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def copy_glue(out: Path | str, what: str = "all") -> GlueCopy:
    """Copies the glue trees `what` names (TREES) into `out`; a ConfigError, with nothing written, when a file of
    the user's is in the way."""
    if what not in TREES:
        raise ConfigError("unknown --what", got=what, expected=" | ".join(TREES))
    out = Path(out)
    record = _record(out)
    sources = _sources(TREES[what])
    result = GlueCopy(out, TREES[what])
    todo: list[str] = []
    conflicts: list[str] = []
    for rel, src in sources.items():
        dest = out / rel
        if any((out / parent).is_symlink() or ((out / parent).exists() and not (out / parent).is_dir())
               for parent in Path(rel).parents if parent != Path(".")):
            conflicts.append(f"{rel} (a file or link where its folder goes)")
        elif dest.is_symlink() or (dest.exists() and not dest.is_file()):
            conflicts.append(f"{rel} (a link or folder)")
        elif not dest.exists():
            todo.append(rel)
        else:
            sha = _sha256(dest)
            if sha == _sha256(src):
                result.unchanged.append(rel)
            elif sha in record.get(rel, []):
                todo.append(rel)
            else:
                conflicts.append(f"{rel} ({'edited since edgeexit wrote it' if rel in record else 'not written by edgeexit'})")
    if conflicts:
        raise ConfigError("--out holds files of yours where the glue goes; nothing was written",
                          got=f"{len(conflicts)} in {out}: {', '.join(conflicts[:5])}{' ...' if len(conflicts) > 5 else ''}",
                          expected="absent files, or files as a previous `edgeexit glue` wrote them",
                          hint="move those files away (or copy your changes elsewhere) and run it again, or pick "
                               "another --out")
    out.mkdir(parents=True, exist_ok=True)
    for rel, src in sources.items():  # the record first: an interrupted copy is finished by the next run
        shas = record.setdefault(rel, [])
        if (sha := _sha256(src)) not in shas:
            shas.append(sha)
    _write_text(json.dumps({"format": FORMAT, "files": dict(sorted(record.items()))}, indent=1) + "\n",
                out / MARKER)
    for rel in todo:
        _write(sources[rel], out / rel)
        result.written.append(rel)
    return result
