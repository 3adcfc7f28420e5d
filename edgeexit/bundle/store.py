"""Bundles on disk: written into a fresh versioned directory and swapped in with one atomic symlink rename (there
is never a moment without a complete bundle), and verified before any runtime touches a file.

    runs/default/bundle -> .bundle-v20261201T203000-1a2b3c   (symlink, replaced atomically)
    runs/default/.bundle-v20261201T203000-1a2b3c/             (the bundle: manifest.json, segments/, ...)

Loading verifies, in this order: the manifest checksum, the types (pydantic, manifest v2), every path (relative,
inside the bundle after resolving links, listed in `files`), then every file's sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from pydantic import ValidationError

from edgeexit import jsonio
from edgeexit.bundle.manifest import (
    MANIFEST,
    SCHEMA_FILE,
    SCHEMA_VERSION,
    Exit,
    Manifest,
    digest,
    json_schema,
)
from edgeexit.errors import BundleError

V1_SCHEMA = "edgeexit.bundle/1"
REEXPORT_HINT = "re-export it from its run directory with this edgeexit: `edgeexit export --run-dir RUN`"
KEEP_VERSIONS = 2  # the current bundle and the one before it (a reader may still be loading it)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: `root` is the real directory (links resolved), `manifest` the typed manifest."""

    root: Path
    manifest: Manifest

    def path(self, rel: str) -> Path:
        return self.root / rel

    @property
    def exits(self) -> list[Exit]:
        return self.manifest.exits

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.manifest.input_shape


# ------------------------------------------------------------------------------------------------ loading

def _read_raw(root: Path) -> dict[str, Any]:
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError("not a bundle: manifest.json is missing", got=str(root), expected=f"{root}/{MANIFEST}",
                          hint="point at the directory `edgeexit build` or `edgeexit export` wrote")
    try:
        raw = json.loads(mpath.read_text(), parse_constant=_no_constants)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
        raise BundleError(f"{mpath} is not valid JSON", got=str(err), expected="the manifest edgeexit wrote",
                          hint="the file was edited or truncated; rebuild the bundle") from err
    if not isinstance(raw, dict):
        raise BundleError(f"{mpath} is not a JSON object", got=type(raw).__name__, expected="object",
                          hint="rebuild the bundle")
    return raw


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON (no NaN or infinities in a manifest)")


def _check_version(raw: dict[str, Any], root: Path) -> None:
    if raw.get("schema") == V1_SCHEMA and "schema_version" not in raw:
        raise BundleError(f"{root} is a v1 bundle, which this edgeexit no longer loads", got=V1_SCHEMA,
                          expected=f"schema_version {SCHEMA_VERSION}", hint=REEXPORT_HINT)
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"bundle {root} has an unknown schema version", got=repr(version),
                          expected=SCHEMA_VERSION, hint="a newer edgeexit wrote it, or it was edited; " + REEXPORT_HINT)


def _validate(raw: dict[str, Any], root: Path) -> Manifest:
    try:
        return Manifest.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in err.errors()[:5])
        raise BundleError(f"manifest of {root} does not match the v{SCHEMA_VERSION} schema",
                          got=f"{err.error_count()} problem(s): {problems}", expected=f"{SCHEMA_FILE} in the bundle",
                          hint=REEXPORT_HINT) from None


def check_relative(rel: str, root: Path) -> Path:
    """`root/rel` if `rel` is a plain relative path that stays inside `root` once links are resolved."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or "\\" in rel or ".." in pure.parts or rel.startswith("~") or ":" in pure.parts[0]:
        raise BundleError("manifest names a path outside the bundle", got=rel,
                          expected="a relative path inside the bundle, without '..'", hint=REEXPORT_HINT)
    real_root = root.resolve()
    full = (real_root / pure).resolve()
    if not full.is_relative_to(real_root):
        raise BundleError("manifest names a path that leads outside the bundle", got=f"{rel} -> {full}",
                          expected=f"a file under {real_root}", hint="a link inside the bundle points out of it; "
                          + REEXPORT_HINT)
    return full


def load_bundle(root: Path | str) -> Bundle:
    """The verified bundle at `root`; raises BundleError (and loads nothing) on any mismatch."""
    root = Path(root)
    if not root.exists():
        raise BundleError("bundle not found", got=str(root), expected="a bundle directory",
                          hint="run `edgeexit export` or `edgeexit build` first")
    real = root.resolve()
    raw = _read_raw(real)
    _check_version(raw, root)
    if raw.get("checksum") != digest(raw):
        raise BundleError("manifest.json was modified after the bundle was written",
                          got=f"checksum {str(raw.get('checksum'))[:12]}…", expected=f"checksum {digest(raw)[:12]}…",
                          hint="thresholds and exits must come from `edgeexit calibrate` / `edgeexit export`; "
                          "rebuild the bundle instead of editing it")
    manifest = _validate(raw, root)
    for rel in manifest.files:
        check_relative(rel, real)
    unlisted = [p for p in manifest.paths() if p not in manifest.files]
    if unlisted:
        raise BundleError("manifest refers to files it does not list (with their sha256) in `files`", got=unlisted,
                          expected=sorted(manifest.files), hint=REEXPORT_HINT)
    for rel, want in manifest.files.items():
        p = real / rel
        if not p.is_file():
            raise BundleError(f"bundle file is missing: {rel}", got="no such file", expected=f"sha256 {want[:12]}…",
                              hint="copy the whole bundle directory, or rebuild it")
        got = sha256(p)
        if got != want:
            raise BundleError(f"bundle file was modified: {rel}", got=f"sha256 {got[:12]}…", expected=f"sha256 {want[:12]}…",
                              hint="the bundle was tampered with or damaged in transfer; rebuild or copy it again")
    return Bundle(real, manifest)


def is_bundle(path: Path) -> bool:
    """Whether `path` holds an edgeexit bundle of any version (what `--out` may replace)."""
    try:
        raw = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and (raw.get("schema") == V1_SCHEMA or isinstance(raw.get("schema_version"), int))


# ------------------------------------------------------------------------------------------------ writing

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_dead_writers(parent: Path, name: str) -> list[Path]:
    """Remove the temporary directories and links that writers of `name` which died left in `parent`."""
    removed = []
    for p in parent.glob(f".{name}.tmp-*"):
        try:
            pid = int(p.name.split(".tmp-")[1].split("-")[0])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            if p.is_symlink() or p.is_file():
                p.unlink(missing_ok=True)
            else:
                shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _versions(parent: Path, name: str) -> list[Path]:
    return sorted(p for p in parent.glob(f".{name}-v*") if p.is_dir() and not p.is_symlink())


def _claim_dest(dest: Path) -> None:
    """`dest` may be replaced only if it is absent, an empty directory, an edgeexit bundle, or our symlink."""
    if dest.is_symlink():
        target = dest.resolve()
        if target.parent == dest.parent.resolve() and target.name.startswith(f".{dest.name}-v"):
            return
        if not is_bundle(dest):
            raise BundleError("the bundle path is a link to something that is not an edgeexit bundle", got=f"{dest} -> {target}",
                              expected="no file there, an empty directory, or an edgeexit bundle",
                              hint="choose another --out; edgeexit never replaces what it did not write")
        return
    if not dest.exists():
        return
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()
        return
    if dest.is_dir() and is_bundle(dest):
        return
    raise BundleError("refusing to write a bundle over a path that is not an edgeexit bundle", got=str(dest),
                      expected="no file there, an empty directory, or an edgeexit bundle",
                      hint="choose another --out; edgeexit never deletes files it did not write")


def _swap_in(version: Path, dest: Path) -> None:
    """Point `dest` at `version` with one rename of a symlink; the old bundle stays loadable until that rename."""
    parent = dest.parent
    if dest.exists() and dest.is_dir() and not dest.is_symlink():
        # A bundle written as a plain directory (before versioned bundles): park it as a version first.
        # This one-time migration is the only moment without a bundle at `dest`.
        os.replace(dest, parent / f".{dest.name}-v0-legacy-{secrets.token_hex(3)}")
    link = parent / f".{dest.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}.link"
    os.symlink(version.name, link)
    os.replace(link, dest)
    fsync_dir(parent)


def _prune_versions(parent: Path, name: str, current: Path) -> None:
    old = [v for v in _versions(parent, name) if v.resolve() != current.resolve()]
    for v in old[: max(0, len(old) - (KEEP_VERSIONS - 1))]:
        shutil.rmtree(v, ignore_errors=True)


def _permissions(root: Path) -> None:
    """mkdtemp makes 0700 directories; give everything the modes the user's umask asks for."""
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for p in root.rglob("*"):
        if p.is_symlink():
            continue
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def write_bundle(dest: Path | str, fields: dict[str, Any], populate: Callable[[Path], dict[str, Any] | None]) -> Bundle:
    """Write a bundle: `populate(tmpdir)` writes every file (and may return manifest fields that only writing them
    tells, e.g. where each segment went); this adds `files` (sha256 of each), the JSON Schema and the checksum,
    validates the manifest, fsyncs, and swaps the new version in at `dest` atomically.

    `fields` are the manifest fields other than schema_version, files and checksum. `dest` must be absent, an empty
    directory or an edgeexit bundle: nothing else is ever replaced.
    """
    dest = Path(dest)
    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    _claim_dest(dest)
    clean_dead_writers(parent, dest.name)
    tmp = parent / f".{dest.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}"
    tmp.mkdir()
    try:
        fields = {**fields, **(populate(tmp) or {})}
        jsonio.write_json(tmp / SCHEMA_FILE, json_schema())
        files = {}
        for p in sorted(tmp.rglob("*")):
            if p.is_symlink():
                raise BundleError("a bundle may not contain links", got=str(p.relative_to(tmp)), expected="plain files")
            if p.is_file():
                _fsync_file(p)
                files[p.relative_to(tmp).as_posix()] = sha256(p)
        raw = jsonio.to_jsonable({**fields, "schema_version": SCHEMA_VERSION, "files": files})
        raw["checksum"] = digest(raw)
        manifest = _validate(raw, dest)
        jsonio.write_json(tmp / MANIFEST, raw)
        _permissions(tmp)
        for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
            fsync_dir(d)
        version = parent / f".{dest.name}-v{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
        os.replace(tmp, version)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_in(version, dest)
    _prune_versions(parent, dest.name, version)
    return Bundle(version.resolve(), manifest)


def link_files(src: Path, names, dst: Path) -> None:
    """Each relative path of `names` from `src` into `dst`: hard-linked where the file system can, else copied."""
    for rel in names:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src / rel, dst / rel)
        except OSError:
            shutil.copy2(src / rel, dst / rel)


def add_files(bundle: Bundle, files: dict[str, str | bytes], dest: Path | str) -> Bundle:
    """A new version of the bundle at `dest` with extra files (reports); segments are hard-linked, not copied."""
    verified = load_bundle(bundle.root)
    fields = verified.manifest.model_dump(mode="json", exclude={"schema_version", "files", "checksum"})

    def populate(tmp: Path) -> None:
        link_files(verified.root, [r for r in verified.manifest.files if r != SCHEMA_FILE and r not in files], tmp)
        for rel, data in files.items():
            check_relative(rel, tmp)
            jsonio.write_atomic(tmp / rel, data)

    return write_bundle(dest, fields, populate)
