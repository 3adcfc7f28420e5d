"""Bundles on disk: written into a fresh versioned directory and swapped in with one atomic symlink rename (there
is never a moment without a complete bundle), and verified before any runtime touches a file.

    runs/default/bundle -> .bundle-v20261201T203000-1a2b3c   (symlink, replaced atomically)
    runs/default/.bundle-v20261201T203000-1a2b3c/             (the bundle: manifest.json, segments/, ...)

    runs/default/.bundle-v.../.edgeexit-bundle                 (our marker, listed in `files` like any file)

Loading verifies, in this order: the manifest checksum, the types (pydantic, manifest v2), every path (relative,
inside the bundle after resolving links, listed in `files`, and nothing on disk that `files` does not list), then
every file's sha256.

Deleting: edgeexit replaces or prunes a bundle directory only when it can prove it wrote it, exactly as it is (our
marker, a manifest whose checksum holds, nothing on disk but what it lists, every sha256 right); temporary
directories only when they carry a dead writer's marker (jsonio). Anything else is left, and said so.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import re
import shutil
import sys
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
# Every bundle version edgeexit writes carries this marker, listed in `files` like any other file (so every loader
# verifies it and none needs an exception for it); its text never changes, so it never changes a content digest.
BUNDLE_MARK = ".edgeexit-bundle"
BUNDLE_MARK_TEXT = '{"written_by": "edgeexit", "what": "bundle version"}\n'
_TEMP_LINK = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>[0-9]{1,10})-(?P<token>[0-9a-f]{32})\.link$")
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
    left_alone: tuple[str, ...] = ()  # after a write: old version directories not pruned (not provably ours), why
    # after an export with --slim: the deployable bundle written beside this development bundle, and where
    deployable: "Bundle | None" = None
    deployable_at: Path | None = None

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
        text = mpath.read_bytes()
        if len(text) > MAX_MANIFEST_BYTES:
            raise ValueError(f"{len(text)} bytes, more than any manifest edgeexit writes ({MAX_MANIFEST_BYTES})")
        raw = json.loads(text.decode("utf-8"), parse_constant=_no_constants, parse_float=_finite)
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        got = "nesting too deep for JSON" if isinstance(err, RecursionError) else str(err)[:300]
        raise BundleError(f"{mpath} is not valid JSON", got=got, expected="the manifest edgeexit wrote",
                          hint="the file was edited or truncated; rebuild the bundle") from None
    if not isinstance(raw, dict):
        raise BundleError(f"{mpath} is not a JSON object", got=type(raw).__name__, expected="object",
                          hint="rebuild the bundle")
    depth = _depth(raw)
    if depth > MAX_DEPTH:
        raise BundleError(f"{mpath} is nested deeper than any manifest edgeexit writes", got=f"depth {depth}",
                          expected=f"at most {MAX_DEPTH} levels", hint="the file was edited; rebuild the bundle")
    return raw


MAX_MANIFEST_BYTES = 16 << 20  # a manifest with hundreds of exits is well under 1 MB
MAX_DEPTH = 32  # a manifest is about 6 levels deep; model/data settings a few more


def _depth(obj: Any) -> int:
    """How deeply `obj` nests (without recursion: the point is to refuse what would overflow the stack)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            break
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
    return deepest


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range (no infinities in a manifest)")
    return value


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
    # nothing rides along unverified: a file, link or folder with files that `files` does not list is refused
    # (a script's neighbour module, say), even though no loader would open it by name
    extra = [rel for rel in _on_disk(real) if rel not in manifest.files and rel != MANIFEST]
    if extra:
        raise BundleError("the bundle holds files its manifest does not list", got=extra[:10],
                          expected=f"only manifest.json and the {len(manifest.files)} files listed in `files`",
                          hint="remove what was added to the bundle folder, or copy the bundle again from its source")
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


def clean_dead_writers(parent: Path, name: str) -> list[Path]:
    """Remove what writers of bundle `name` that died left in `parent`: their temporary directories (only those that
    carry their own writer marker, see jsonio) and their temporary links (which hold no data, and point at one of
    our version directories)."""
    removed = jsonio.clean_dead_temps(parent, name)
    for p in parent.glob(f".{name}.tmp-*.link"):
        m = _TEMP_LINK.match(p.name)
        if m and m["name"] == name and p.is_symlink() and os.readlink(p).startswith(f".{name}-v") \
                and int(m["pid"]) != os.getpid() and not jsonio._pid_alive(int(m["pid"])):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _versions(parent: Path, name: str) -> list[Path]:
    return sorted(p for p in parent.glob(f".{name}-v*") if p.is_dir() and not p.is_symlink())


def _not_ours(d: Path) -> str | None:
    """None when directory `d` is a bundle edgeexit wrote, exactly as it wrote it: our marker, a manifest whose
    checksum holds, and on disk nothing but the files it lists (each with its sha256) and the manifest itself.
    Otherwise what disproves it: then `d` is left alone."""
    if d.is_symlink() or not d.is_dir():
        return "not a directory"
    try:
        if (d / BUNDLE_MARK).read_text() != BUNDLE_MARK_TEXT:
            return f"its {BUNDLE_MARK} is not edgeexit's"
        raw = json.loads((d / MANIFEST).read_text(), parse_constant=_no_constants)
    except FileNotFoundError as err:
        return f"no {Path(err.filename).name}: edgeexit did not write it"
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return f"its {MANIFEST} cannot be read as edgeexit's"
    try:
        if not isinstance(raw, dict) or raw.get("checksum") != digest(raw):
            return f"its {MANIFEST} was changed after edgeexit wrote it"
    except (TypeError, ValueError, RecursionError):
        return f"its {MANIFEST} was changed after edgeexit wrote it"
    files = raw.get("files")
    if not isinstance(files, dict) or BUNDLE_MARK not in files:
        return f"its {MANIFEST} does not list the marker"
    extra = [rel for rel in _on_disk(d) if rel not in files and rel != MANIFEST
             and not (rel == jsonio.WRITER_MARK and jsonio.dead_writers_mark(d / rel))]  # a writer died at the end
    if extra:
        return f"it holds files edgeexit did not write: {extra[:5]}"
    for rel, want in files.items():
        p = d / rel
        if p.is_symlink() or not p.is_file() or sha256(p) != want:
            return f"{rel} is not the file edgeexit wrote"
    return None


def _on_disk(root: Path) -> list[str]:
    """Every file, link, and directory without anything listed under it, relative to `root` (links not followed).
    Empty directories hold nothing, so they are not reported."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for n in filenames:
            found.append((here / n).relative_to(root).as_posix())
        for n in list(dirnames):
            if (here / n).is_symlink():
                found.append((here / n).relative_to(root).as_posix())
                dirnames.remove(n)
    return sorted(found)


def check_dest(dest: Path | str) -> None:
    """Raise unless a bundle may be written at `dest` (see _claim_dest); changes nothing. Commands call it before
    minutes of work, so that a wrong --out is refused at once."""
    dest = Path(dest)
    if dest.is_dir() and not dest.is_symlink() and not any(dest.iterdir()):
        return
    _claim_dest(dest)


def _claim_dest(dest: Path) -> None:
    """`dest` may be replaced only if it is absent, an empty directory (removed here), our link to one of our
    versions, or a bundle edgeexit wrote exactly as it wrote it. Anything else (a user's folder with a manifest.json,
    our bundle with the user's files added, a link to elsewhere) is refused and left as it is."""
    if dest.is_symlink():
        target = dest.resolve()
        if target.parent == dest.parent.resolve() and target.name.startswith(f".{dest.name}-v") and target.is_dir():
            return
        why = _not_ours(target)
        if why is not None:
            raise BundleError("refusing to replace a link to something that is not a bundle edgeexit wrote",
                              got=f"{dest} -> {target}: {why}",
                              expected="no file there, an empty directory, or a bundle edgeexit wrote, unchanged",
                              hint="choose another --out; edgeexit never replaces what it did not write")
        return
    if not dest.exists():
        return
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()
        return
    why = _not_ours(dest) if dest.is_dir() else "it is a file"
    if why is not None:
        raise BundleError("refusing to write a bundle over a path that is not an edgeexit bundle, as edgeexit wrote it",
                          got=f"{dest}: {why}",
                          expected="no file there, an empty directory, or a bundle edgeexit wrote, unchanged",
                          hint="choose another --out (or move your files out of it); edgeexit never deletes files "
                          "it did not write")


def _swap_in(version: Path, dest: Path) -> None:
    """Point `dest` at `version` with one rename of a symlink; the old bundle stays loadable until that rename."""
    parent = dest.parent
    if dest.exists() and dest.is_dir() and not dest.is_symlink():
        # A bundle edgeexit wrote as a plain directory (_claim_dest proved it): park it as a version first.
        # This one-time migration is the only moment without a bundle at `dest`.
        os.replace(dest, parent / f".{dest.name}-v0-parked-{secrets.token_hex(3)}")
    link = parent / f".{dest.name}.tmp-{os.getpid()}-{secrets.token_hex(16)}.link"
    os.symlink(version.name, link)
    os.replace(link, dest)
    fsync_dir(parent)


def _prune_versions(parent: Path, name: str, current: Path) -> list[str]:
    """Delete old versions beyond KEEP_VERSIONS, only those edgeexit can prove it wrote; returns what it left alone
    and why (also printed as a note on stderr: nothing is kept silently)."""
    ours, left = [], []
    for v in _versions(parent, name):
        if v.resolve() == current.resolve():
            continue
        why = _not_ours(v)
        if why is None:
            ours.append(v)
        else:
            left.append(f"{v}: {why}")
    for v in ours[: max(0, len(ours) - (KEEP_VERSIONS - 1))]:
        shutil.rmtree(v, ignore_errors=True)
    for note in left:
        print(f"note: left {note} (not a bundle version edgeexit can prove it wrote, so it never deletes it; "
              "remove it yourself if you do not need it)", file=sys.stderr)
    return left


def _permissions(root: Path) -> None:
    """mkdtemp makes 0700 directories; give everything the modes the user's umask asks for."""
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for p in root.rglob("*"):
        if p.is_symlink():
            continue
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def write_bundle(dest: Path | str, fields: dict[str, Any], populate: Callable[[Path], dict[str, Any] | None],
                 attach: Callable[[Bundle], dict[str, str | bytes]] | None = None,
                 known: dict[str, str] | None = None) -> Bundle:
    """Write a bundle: `populate(tmpdir)` writes every file (and may return manifest fields that only writing them
    tells, e.g. where each segment went); this adds `files` (sha256 of each), the JSON Schema and the checksum,
    validates the manifest, fsyncs, and swaps the new version in at `dest` atomically.

    `attach(bundle)`: files measured on the finished bundle (evaluation, profile, report) that go into this same
    write. It gets the complete, verified version before anything points at it (a fresh process can load it: a
    profile runs there); its files are added beside hard links of the others (hashed once, where they were written)
    and only that version is swapped in, so readers see one new bundle, not one per attachment.

    `fields` are the manifest fields other than schema_version, files and checksum. `dest` must be absent, an empty
    directory, or a bundle edgeexit wrote and nobody changed: nothing else is ever replaced.

    `known`: sha256 of files `populate` hard-links from a verified bundle (relative path -> sha256), taken as they are
    instead of hashing them again (a file that changed meanwhile makes the new bundle fail every loader's check).
    """
    dest = Path(dest)
    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    _claim_dest(dest)
    clean_dead_writers(parent, dest.name)
    tmp = jsonio.make_temp_dir(parent, dest.name)
    try:
        fields = {**fields, **(populate(tmp) or {})}
        jsonio.write_json(tmp / SCHEMA_FILE, json_schema())
        jsonio.write_atomic(tmp / BUNDLE_MARK, BUNDLE_MARK_TEXT)
        version, manifest = _seal(tmp, dest, fields, _hash_new(tmp, {
            k: v for k, v in (known or {}).items() if k not in (SCHEMA_FILE, BUNDLE_MARK)}))
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if attach is not None:
        version, manifest = _attach(version, manifest, dest, attach)
    _swap_in(version, dest)
    left = _prune_versions(parent, dest.name, version)
    return Bundle(version.resolve(), manifest, tuple(left))


def _hash_new(tmp: Path, known: dict[str, str]) -> dict[str, str]:
    """sha256 of every file in `tmp`; those in `known` (hard links of files hashed when they were written) keep it."""
    files = {}
    for p in sorted(tmp.rglob("*")):
        if p == tmp / jsonio.WRITER_MARK:
            continue  # the writer's own marker: removed before the directory becomes a version
        if p.is_symlink():
            raise BundleError("a bundle may not contain links", got=str(p.relative_to(tmp)), expected="plain files")
        if p.is_file():
            rel = p.relative_to(tmp).as_posix()
            _fsync_file(p)
            files[rel] = known[rel] if rel in known else sha256(p)
    return files


def _seal(tmp: Path, dest: Path, fields: dict[str, Any], files: dict[str, str]) -> tuple[Path, Manifest]:
    """Manifest, permissions and fsync of a written temporary directory, renamed to a version beside `dest` (not
    yet pointed at); the caller removes `tmp` if this raises."""
    parent = dest.parent
    raw = jsonio.to_jsonable({**fields, "schema_version": SCHEMA_VERSION, "files": files})
    raw["checksum"] = digest(raw)
    manifest = _validate(raw, dest)
    jsonio.write_json(tmp / MANIFEST, raw)
    _permissions(tmp)
    for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
        fsync_dir(d)
    version = parent / f".{dest.name}-v{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    os.replace(tmp, version)
    # until it is dropped, the marker proves the unlinked version is ours (to prune) if this writer dies here
    jsonio.drop_marker(version)
    fsync_dir(version)
    fsync_dir(parent)
    return version, manifest


def _attach(version: Path, manifest: Manifest, dest: Path, attach: Callable[[Bundle], dict[str, str | bytes]]
            ) -> tuple[Path, Manifest]:
    """The version with `attach`'s files added, as a new version; the first one (never pointed at) is removed."""
    tmp = None
    try:
        extra = attach(Bundle(version.resolve(), manifest))
        if not extra:
            return version, manifest
        tmp = jsonio.make_temp_dir(dest.parent, dest.name)
        kept = [r for r in manifest.files if r not in extra]
        link_files(version, kept, tmp)
        for rel, data in extra.items():
            check_relative(rel, tmp)
            jsonio.write_atomic(tmp / rel, data)
        fields = manifest.model_dump(mode="json", exclude={"schema_version", "files", "checksum"})
        final = _seal(tmp, dest, fields, _hash_new(tmp, {r: manifest.files[r] for r in kept}))
    except BaseException:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(version, ignore_errors=True)  # ours, complete, and nothing points at it
        raise
    shutil.rmtree(version, ignore_errors=True)
    return final


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
