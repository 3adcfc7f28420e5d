"""The engines stage, `edgeexit engines BUNDLE`: TensorRT engines built on the device that will run them, from a
verified bundle's ONNX, written as a new version of the bundle.

TensorRT engines are specific to the GPU, the TensorRT version and (on Jetson) the L4T release, so `edgeexit export`
never builds them: a `--target jetson` / `--target cuda` bundle carries the ONNX segments, and on the Jetson or GPU
host this stage

1. verifies the bundle before anything else reads it: `load_bundle` (manifest checksum, types, paths, every file's
   sha256), and no file or link in the bundle that its manifest does not list;
2. copies each ONNX source (every segment, the profiler's probes, the reference) out of the bundle, checks the copy's
   sha256 against the manifest again and refuses ONNX that would read weights from other files (external data);
3. builds one engine per source with an optimisation profile (min 1, opt the segment's typical live batch from the
   calibration, max the bundle's largest) at the bundle's precision, with TensorRT's Python builder or trtexec;
4. writes engine/*.engine and engine/engines.json (the engine record) with every other listed file as a new bundle
   version through the bundle writer (atomic; the old version stays until the next one).

Nothing in a bundle is executed: no script ships in one (bundles before this stage carried `tensorrt/`, which is not
carried over). Everything needed is in the edgeexit package, so an installed wheel is enough.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

from edgeexit.bundle import MANIFEST, SCHEMA_FILE, Bundle, is_bundle, load_bundle, sha256, write_bundle
from edgeexit.bundle.store import link_files
from edgeexit.errors import BundleError
from edgeexit.rundir import LOCK, RunDir
from edgeexit.runtime.engine_record import DIR, METADATA, builder_record, read_record
from edgeexit.runtime.trt_device import cuda_device_count, require_cuda_device, tensorrt, version_of

FORMAT = "engine"
DELEGATE = "tensorrt"
LEGACY_KIT = "tensorrt/"  # where bundles before this stage carried a build script: never carried over
REFUSED_HINT = "use the bundle exactly as `edgeexit build` / `edgeexit export` wrote it; copy it again or re-export it"


def unlisted(bundle: Bundle) -> list[str]:
    """Every file or link inside the bundle that its manifest does not list (manifest.json itself aside)."""
    listed = {*bundle.manifest.files, MANIFEST}
    found = []
    for here, dirs, files in os.walk(bundle.root, followlinks=False):
        rel_dir = Path(here).relative_to(bundle.root)
        for name in [*files, *(d for d in dirs if (Path(here) / d).is_symlink())]:
            rel = (rel_dir / name).as_posix()
            if rel not in listed or (Path(here) / name).is_symlink():
                found.append(rel)
    return sorted(found)


def verified(bundle_dir: Path) -> Bundle:
    """The bundle at `bundle_dir`, verified (`load_bundle`) and holding nothing its manifest does not list."""
    b = load_bundle(bundle_dir)
    extra = unlisted(b)
    if extra:
        raise BundleError("the bundle holds files its manifest does not list", got=extra[:10],
                          expected="only the files in manifest.json's `files`", hint=REFUSED_HINT)
    return b


def check_dest(dest: Path) -> None:
    """Refuse, before building, a destination the bundle writer would refuse after it: anything but nothing, an
    empty directory or an edgeexit bundle (the writer checks again when it writes)."""
    dest = Path(dest)
    if dest.exists() and not is_bundle(dest) and not (dest.is_dir() and not dest.is_symlink() and not any(dest.iterdir())):
        raise BundleError("refusing to write a bundle over a path that is not an edgeexit bundle", got=str(dest),
                          expected="no file there, an empty directory, or an edgeexit bundle",
                          hint="choose another --out; edgeexit never deletes files it did not write")


def onnx_slots(fields: dict) -> list[dict]:
    """Every {"segment": {format: ref}} of a manifest (exits, their head / static probes, the reference) with ONNX."""
    slots = []
    for e in fields["exits"]:
        slots += [s for s in (e, e.get("head"), e.get("static")) if isinstance(s, dict) and "onnx" in s.get("segment", {})]
    if "onnx" in fields["reference"]["segment"]:
        slots.append(fields["reference"])
    return slots


def engine_sources(slots: list[dict]) -> dict[str, str]:
    """engine name (the ONNX file's stem) -> its ONNX file; two different files with one name are refused."""
    sources: dict[str, str] = {}
    for slot in slots:
        rel = slot["segment"]["onnx"]["file"]
        name = PurePosixPath(rel).stem
        if sources.setdefault(name, rel) != rel:
            raise BundleError("two ONNX files of the bundle would build the same engine", got=[sources[name], rel],
                              expected="one ONNX file per name", hint=REFUSED_HINT)
    return sources


def opt_batches(bundle: Bundle) -> dict[str, int]:
    """The typical live batch of every segment at the target's largest batch: the calibration's share of samples that
    reach it (a head sees its segment's batch; the reference and the static truncations see every sample)."""
    hi = bundle.manifest.batch.max
    reach = [1.0] * len(bundle.exits)
    fractions = _exit_fractions(bundle)
    if fractions is not None and len(fractions) == len(bundle.exits):
        reach = [max(0.0, 1.0 - float(sum(fractions[:k]))) for k in range(len(bundle.exits))]
    out = {}
    for k, r in enumerate(reach):
        out[f"seg{k}"] = out[f"head{k}"] = min(hi, max(1, round(hi * r)))
        out[f"static{k}"] = hi
    out["reference"] = hi
    return out


def _exit_fractions(bundle: Bundle) -> list[float] | None:
    """calibration.json's exit fractions (a verified file, still checked: finite numbers in [0, 1]); None without."""
    if "calibration.json" not in bundle.manifest.files:
        return None
    try:
        fractions = json.loads(bundle.path("calibration.json").read_text()).get("exit_fractions")
    except (OSError, ValueError, AttributeError) as err:
        raise BundleError("the bundle's calibration.json is not a calibration", got=type(err).__name__,
                          expected="a JSON object with exit_fractions", hint=REFUSED_HINT) from None
    if fractions is None:
        return None
    if not (isinstance(fractions, list) and all(isinstance(f, (int, float)) and not isinstance(f, bool)
                                                 and math.isfinite(f) and 0 <= f <= 1 for f in fractions)):
        raise BundleError("the bundle's calibration.json has bad exit fractions", got=str(fractions)[:80],
                          expected="a list of numbers in [0, 1]", hint=REFUSED_HINT)
    return fractions


def copy_source(bundle: Bundle, rel: str, dst: Path) -> Path:
    """The ONNX file `rel` copied out of the bundle to `dst`, the copy's sha256 checked against the manifest (what is
    built is what was verified), refused if it would read weights from any other file (external data)."""
    import onnx

    want = bundle.manifest.files.get(rel)
    if want is None:
        raise BundleError("the manifest names an ONNX file it does not list", got=rel, expected="a file in `files`",
                          hint=REFUSED_HINT)
    data = bundle.path(rel).read_bytes()
    dst.write_bytes(data)
    if sha256(dst) != want:
        raise BundleError(f"bundle file changed while the engines were being built: {rel}", got="another sha256",
                          expected=f"sha256 {want[:12]}…", hint="build again, with nothing else writing the bundle")
    try:
        model = onnx.load_from_string(data)
    except Exception as err:  # protobuf's DecodeError and friends: a file that is not ONNX
        raise BundleError(f"{rel} is not an ONNX model", got=type(err).__name__, expected="ONNX", hint=REFUSED_HINT) from None
    external = [t.name for t in _tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise BundleError(f"{rel} reads weights from other files (ONNX external data)", got=external[:5],
                          expected="every weight inside the ONNX file (edgeexit exports them so)", hint=REFUSED_HINT)
    return dst


def _tensors(graph):
    """Every tensor a graph holds: initializers, sparse initializers, tensor attributes, in subgraphs too."""
    yield from graph.initializer
    for s in graph.sparse_initializer:
        yield s.values
        yield s.indices
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _tensors(a.g)
            for g in a.graphs:
                yield from _tensors(g)


def build_engines(bundle_dir: Path, dest: Path | None = None, *, compute_capabilities: Sequence[str] | None = None,
                  workspace_mb: int | None = None, flavour: str | None = None, trtexec: str | None = None,
                  log: Callable[[str], None] = print) -> Bundle:
    """Verify the bundle at `bundle_dir`, build the engines of its ONNX files (segments, probes, reference) on this
    device, or with TensorRT-RTX in CPU-only mode for `compute_capabilities`, and write them as a new version of the
    bundle at `dest` (default: `bundle_dir`): format `engine`, delegate `tensorrt`, engine/*.engine and
    engine/engines.json, every other listed file kept. `trtexec`: build with JetPack's trtexec at that path instead of
    the Python builder."""
    dest = Path(dest) if dest is not None else Path(bundle_dir)
    # in a run directory, hold its lock: no other command swaps or prunes bundle versions while the engines build
    with RunDir(dest.parent).lock("engines") if (dest.parent / LOCK).is_file() else contextlib.nullcontext():
        return _build(Path(bundle_dir), dest, compute_capabilities=compute_capabilities, workspace_mb=workspace_mb,
                      flavour=flavour, trtexec=trtexec, log=log)


def _build(bundle_dir: Path, dest: Path, *, compute_capabilities, workspace_mb, flavour, trtexec, log) -> Bundle:
    from edgeexit.export.engine_build import (
        build_engine,
        build_with_trtexec,
        check_capabilities,
        check_precision,
        write_engines,
    )

    b = verified(bundle_dir)
    m = b.manifest
    if m.delegate != DELEGATE:
        raise BundleError(f"the bundle's target {m.target} does not run on TensorRT", got=f"delegate {m.delegate}",
                          expected=f"delegate {DELEGATE} (targets jetson, cuda)",
                          hint="export with --target jetson or --target cuda, then build its engines")
    if "onnx" not in m.formats:
        raise BundleError("the bundle holds no ONNX segments to build engines from", got=m.formats, expected="onnx",
                          hint="export with --target jetson or --target cuda")
    check_precision(m.precision)
    fields = m.model_dump(mode="json", exclude={"schema_version", "files", "checksum"})
    slots = onnx_slots(fields)
    sources = engine_sources(slots)
    opt = opt_batches(b)
    trt, flavour = tensorrt(flavour)
    # what can be refused without building is refused before the first build (minutes each on a Jetson)
    if trtexec:
        require_cuda_device("trtexec")
    else:
        check_capabilities(flavour, compute_capabilities)
    check_dest(dest)
    built = {}
    with tempfile.TemporaryDirectory() as tmp:
        # every source copied out and checked before the first build: a bad one anywhere means nothing is built
        copies = {name: copy_source(b, rel, Path(tmp) / f"{name}.onnx") for name, rel in sources.items()}
        for name, rel in sources.items():
            src = copies[name]
            batch = (1, min(m.batch.max, opt.get(name, m.batch.max)), m.batch.max)
            log(f"{name}: {rel} -> {DIR}/{name}.engine, batch {batch[0]}/{batch[1]}/{batch[2]}, {m.precision}")
            if trtexec:
                e = build_with_trtexec(trtexec, src, Path(tmp) / f"{name}.engine", batch=batch, precision=m.precision,
                                       workspace_mb=workspace_mb)
            else:
                e = build_engine(src, batch=batch, precision=m.precision, compute_capabilities=compute_capabilities,
                                 workspace_mb=workspace_mb, trt=trt, flavour=flavour)
            built[name] = (rel, e)
    record = builder_record(trt, flavour, m.precision, next(iter(built.values()))[1].compute_capabilities,
                            tool="trtexec" if trtexec else "python builder")
    keep = [r for r in m.files if r != SCHEMA_FILE and not r.startswith(f"{DIR}/") and not r.startswith(LEGACY_KIT)]

    def populate(out: Path) -> dict:
        link_files(b.root, keep, out)
        refs = write_engines(out, built, record)
        for slot in slots:
            slot["segment"][FORMAT] = refs[PurePosixPath(slot["segment"]["onnx"]["file"]).stem].model_dump()
        return {"exits": fields["exits"], "reference": fields["reference"], "format": FORMAT,
                "formats": [FORMAT, *[f for f in m.formats if f != FORMAT]], "delegate": DELEGATE,
                "versions": {**m.versions, flavour: version_of(trt)}}

    return write_bundle(dest, fields, populate)


def describe(bundle: Bundle, dest: Path) -> str:
    """One line on what was built, for the command's output."""
    builder = read_record(bundle.path(METADATA)).builder
    reference = " + reference" if FORMAT in bundle.manifest.reference.segment else ""  # a deployable bundle has none
    return (f"engines: {len(bundle.exits)} segments{reference}, {builder.flavour} {builder.version}, "
            f"compute capability {', '.join(builder.compute_capabilities)}"
            f"{', GPU ' + builder.gpu if builder.gpu else ' (CPU-only build)'}"
            f"{', L4T ' + builder.l4t if builder.l4t else ''}, {builder.tool} -> {dest} ({bundle.root.name})")


def profile_step(dest: Path) -> tuple[Path | None, str]:
    """(the run directory to profile, or None, and what to tell the user) once the engines are in `dest`."""
    if cuda_device_count() == 0:
        return None, ("no CUDA device here: the engines cannot be profiled on this machine; copy the bundle to the "
                      "device and run `edgeexit profile --run-dir RUN` there")
    if Path(dest).name != "bundle":
        return None, f"{dest} is not RUN/bundle: profile it with `edgeexit profile --run-dir RUN` once it is"
    return Path(dest).parent, f"profiling the engines: edgeexit profile --run-dir {Path(dest).parent}"


def engines_to_build(bundle: Bundle, bundle_path: Path) -> str | None:
    """The command that builds a TensorRT bundle's engines on its device; None when there is nothing to build."""
    m = bundle.manifest
    if m.delegate != DELEGATE or FORMAT in m.formats:
        return None
    return f"edgeexit engines {bundle_path}"
