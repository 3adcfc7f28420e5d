"""The deployable bundle: manifest.json + segment files + calibration + reports, written atomically and
verified (schema and every file's sha256) before any runtime touches a file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgeexit import jsonio
from edgeexit.errors import BundleError

SCHEMA = "edgeexit.bundle/1"
MANIFEST = "manifest.json"
REQUIRED_KEYS = ("schema", "edgeexit_version", "model", "input", "class_names", "exits", "full_macs", "target",
                 "format", "precision", "files", "versions")
REQUIRED_EXIT_KEYS = ("index", "name", "segment", "macs", "head_macs", "cumulative_macs", "threshold", "score")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Bundle:
    """A verified bundle on disk."""

    root: Path
    manifest: dict

    def path(self, rel: str) -> Path:
        return self.root / rel

    @property
    def exits(self) -> list[dict]:
        return self.manifest["exits"]

    @property
    def thresholds(self) -> list[float]:
        return [float(e["threshold"]) for e in self.exits]  # float() reads the "inf" / "-inf" strings

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.manifest["input"]["shape"])


def write_bundle(dest: Path, manifest: dict, populate: Callable[[Path], None]) -> Bundle:
    """Build a bundle in a temporary directory beside `dest`, then swap it in.

    `populate(tmpdir)` writes every file (segments, calibration.json, reports); this function adds each
    file's sha256 to the manifest, writes manifest.json last, fsyncs, and renames. An existing bundle at
    `dest` is replaced only once the new one is complete.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    try:
        populate(tmp)
        files = {}
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                _fsync(p)
                files[p.relative_to(tmp).as_posix()] = sha256(p)
        manifest = {**manifest, "schema": SCHEMA, "files": files}
        _check_manifest(manifest, tmp)
        manifest["checksum"] = manifest_digest(manifest)
        jsonio.write_json(tmp / MANIFEST, manifest)
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Bundle(dest, manifest)


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON without its own checksum: any edit to the manifest shows."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(jsonio.to_jsonable(body), sort_keys=True).encode()).hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_manifest(manifest: dict, root: Path) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"manifest of {root} lacks keys", got=missing, expected=list(REQUIRED_KEYS),
                          hint="rebuild the bundle with `edgeexit export`")
    if manifest["schema"] != SCHEMA:
        raise BundleError(f"bundle {root} has an unknown schema", got=manifest["schema"], expected=SCHEMA,
                          hint="rebuild it with this edgeexit version (`edgeexit export`)")
    if not manifest["exits"]:
        raise BundleError(f"bundle {root} has no exits", got=0, expected=">= 1 exit", hint="rebuild the bundle")
    for e in manifest["exits"]:
        lacking = [k for k in REQUIRED_EXIT_KEYS if k not in e]
        if lacking:
            raise BundleError(f"exit {e.get('index', '?')} in {root}/manifest.json lacks keys", got=lacking,
                              expected=list(REQUIRED_EXIT_KEYS), hint="rebuild the bundle")
        if e["segment"] not in manifest["files"]:
            raise BundleError(f"exit {e['index']} names a segment file the bundle does not list", got=e["segment"],
                              expected=sorted(manifest["files"]), hint="rebuild the bundle")


def load_bundle(root: Path) -> Bundle:
    """Read manifest.json, check its schema and every file's sha256; raise BundleError on any mismatch."""
    root = Path(root)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError("not a bundle: manifest.json is missing", got=str(root), expected=f"{root}/{MANIFEST}",
                          hint="point at the directory `edgeexit build` or `edgeexit export` wrote")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{mpath} is not valid JSON", got=str(err), expected="the manifest edgeexit wrote",
                          hint="the file was edited or truncated; rebuild the bundle") from err
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath} is not a JSON object", got=type(manifest).__name__, expected="object",
                          hint="rebuild the bundle")
    _check_manifest(manifest, root)
    digest = manifest_digest(manifest)
    if manifest.get("checksum") != digest:
        raise BundleError("manifest.json was modified after the bundle was written", got=f"checksum {str(manifest.get('checksum'))[:12]}…",
                          expected=f"checksum {digest[:12]}…", hint="thresholds and exits must come from `edgeexit calibrate` / "
                          "`edgeexit export`; rebuild the bundle instead of editing it")
    for rel, want in manifest["files"].items():
        p = root / rel
        if not p.is_file():
            raise BundleError(f"bundle file is missing: {rel}", got="no such file", expected=f"sha256 {want[:12]}…",
                              hint="copy the whole bundle directory, or rebuild it")
        got = sha256(p)
        if got != want:
            raise BundleError(f"bundle file was modified: {rel}", got=f"sha256 {got[:12]}…", expected=f"sha256 {want[:12]}…",
                              hint="the bundle was tampered with or damaged in transfer; rebuild or copy it again")
    return Bundle(root, manifest)


def add_files(bundle: Bundle, files: dict[str, str | bytes]) -> Bundle:
    """A new bundle at the same place with extra files (reports), re-verified and re-written atomically."""
    verified = load_bundle(bundle.root)
    manifest = {k: v for k, v in verified.manifest.items() if k not in ("files", "checksum", "schema")}

    def populate(tmp: Path) -> None:
        for rel in verified.manifest["files"]:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(verified.root / rel, tmp / rel)
        for rel, data in files.items():
            jsonio.write_atomic(tmp / rel, data)

    return write_bundle(verified.root, manifest, populate)
