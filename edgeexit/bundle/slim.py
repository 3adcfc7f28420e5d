"""The deployable bundle (`export --slim`, the default): what the device runs and nothing else, cut from the
development bundle and verified exactly like it.

The development bundle (RUN/bundle) holds every format the target's checks need: the target's own files, ONNX for
the host emulation and `compare`, the torch programs (.pt2), the unsplit reference model and the profiler's probes
(each exit's head alone, the network truncated there), test vectors and reports. An app ships none of that but the
target's own program. The deployable bundle beside it (RUN/bundle-slim) is an ordinary bundle of the same manifest
contract, written by the same writer (atomic, sealed), so every runner verifies it with the checks it already makes
(manifest checksum, schema, the exact file list, every file's sha256): nothing is skipped because it is small.

What it keeps:

- `formats` = [the target's own format]: `pte` (android, ios), `onnx` (cpu; jetson and cuda before their engines
  are built on the device: the ONNX the engines are built from), `engine` once they are built (with their record);
- every exit's segment in that format, and the batch-1 form of the loop where the format has one (ONNX's
  `fused.onnx`: onnxruntime runs a sample alone through it; a second copy of the weights, the price of about 9 %
  less time per single sample with ResNet-18 at 32 px);
- the reference and the probes only where they cost nothing: methods of the one `.pte` every exit already needs
  (identical weights are stored once), so the on-device profiler still works there. Where they are files of their
  own (ONNX, engines: a whole second copy of the network, and the truncations) they are left out: the manifest's
  `reference` keeps its I/O and MACs (the yardstick of every saving) with an empty `segment`, the probes are null;
- calibration.json (thresholds, expected exit fractions: `edgeexit engines` sizes its profiles from them);
- with `vectors`: the test vectors, pte/program.bpte (ExecuTorch's BundledProgram: `edgeexit_runner --verify`,
  Kotlin's and Swift's verify()) and vectors.npz. Without them the device can still verify a slim .pte against its
  development bundle's vectors: `edgeexit_runner SLIM --verify --bpte RUN/bundle/pte/program.bpte`.

Files are hard links of the development bundle's (same file system): a deployable bundle costs no disk of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeexit.bundle.manifest import MANIFEST, SCHEMA_FILE, Format, Manifest
from edgeexit.bundle.store import BUNDLE_MARK, Bundle, link_files, load_bundle, write_bundle

SUFFIX = "-slim"  # RUN/bundle -> RUN/bundle-slim; --out X -> X-slim
CALIBRATION = "calibration.json"


def slim_path(dev: Path | str) -> Path:
    """Where the deployable bundle of the development bundle at `dev` goes: beside it, `-slim` appended."""
    dev = Path(dev)
    return dev.with_name(dev.name + SUFFIX)


def vector_files() -> tuple[str, ...]:
    """The test-vector files a bundle may hold (the BundledProgram, compare's vectors.npz)."""
    from edgeexit.compare import VECTORS
    from edgeexit.runtime.bundled_program import BUNDLED

    return (BUNDLED, VECTORS)


def format_extras(fmt: Format) -> tuple[str, ...]:
    """Files a format's runtime reads besides its segment files: the TensorRT engine record."""
    if fmt == "engine":
        from edgeexit.runtime.engine_record import METADATA

        return (METADATA,)
    return ()


def slim_fields(manifest: Manifest, *, vectors: bool = False) -> tuple[dict[str, Any], list[str]]:
    """(the deployable manifest's fields, the files it keeps) of a development manifest. The fields are those
    `write_bundle` takes: everything but schema_version, files and checksum, which the writer sets again."""
    fmt = manifest.format
    fields = manifest.model_dump(mode="json", exclude={"schema_version", "files", "checksum"})
    kept = {e.segment[fmt].file for e in manifest.exits}  # what the exit loop runs: always kept
    fused = manifest.fused.segment.get(fmt) if manifest.fused is not None else None
    if fused is not None:  # the loop's batch-1 form (ONNX): the device runs it for every single sample
        kept.add(fused.file)
        fields["fused"]["segment"] = {fmt: fused.model_dump(mode="json")}
    else:
        fields["fused"] = None

    def only(segment: dict) -> dict:
        """`segment` in the kept format, or {} when that program is a file of its own (not kept)."""
        ref = segment.get(fmt)
        return {fmt: ref} if ref is not None and ref["file"] in kept else {}

    for e in fields["exits"]:
        e["segment"] = only(e["segment"])
        for probe in ("head", "static"):
            if e.get(probe) is not None:
                seg = only(e[probe]["segment"])
                e[probe] = {**e[probe], "segment": seg} if seg else None
    fields["reference"]["segment"] = only(fields["reference"]["segment"])
    fields["formats"] = [fmt]
    extras = [CALIBRATION, *format_extras(fmt), *(vector_files() if vectors else ())]
    files = sorted(kept | {f for f in extras if f in manifest.files})
    return fields, files


def write_slim(dev: Bundle | Path | str, dest: Path | str, *, vectors: bool = False) -> Bundle:
    """The deployable bundle of the development bundle `dev`, written at `dest` like any bundle (atomic; `dest` must be
    absent, empty or an edgeexit bundle nobody changed). A slim bundle is never cut from files nobody checked: a path
    is verified first (load_bundle); a `Bundle` is one already (what write_bundle or load_bundle returned), and its
    files' sha256 carry over to the hard links without hashing them again."""
    dev = dev if isinstance(dev, Bundle) else load_bundle(dev)
    fields, files = slim_fields(dev.manifest, vectors=vectors)
    linked = [f for f in files if f not in (SCHEMA_FILE, BUNDLE_MARK, MANIFEST)]

    def populate(tmp: Path) -> None:
        link_files(dev.root, linked, tmp)

    return write_bundle(dest, fields, populate, known={f: dev.manifest.files[f] for f in linked})


def bundle_bytes(bundle: Bundle) -> int:
    """Bytes a bundle takes to ship: every listed file and the manifest."""
    return sum(bundle.path(rel).stat().st_size for rel in bundle.manifest.files) + bundle.path(MANIFEST).stat().st_size


def deployable_bytes(dev: Bundle, *, vectors: bool = False) -> int:
    """What the deployable bundle of `dev` would take, its manifest aside (a few kB), without writing it: for sizing a
    bundle that was exported with --no-slim, or by an edgeexit before it."""
    _, files = slim_fields(dev.manifest, vectors=vectors)
    written = {SCHEMA_FILE, BUNDLE_MARK} & set(dev.manifest.files)  # the writer writes them again, the same bytes
    return sum(dev.path(rel).stat().st_size for rel in {*files, *written})


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def sizes_line(dev: Bundle, dev_path: Path | str) -> str:
    """One line for a command's closing output: the development bundle's size and, when one was written beside it
    (`dev.deployable`), the deployable bundle's, which is what to ship."""
    line = f"development bundle {dev_path}: {megabytes(bundle_bytes(dev))} ({', '.join(dev.manifest.formats)}; " \
           "compare, profile, report)"
    if dev.deployable is None:
        older = slim_path(dev_path)
        stale = f"; {older} is an earlier export's, not this bundle's" if older.exists() or older.is_symlink() else ""
        return line + "; no deployable bundle (--no-slim)" + stale
    slim = dev.deployable
    return (f"deployable bundle {dev.deployable_at}: {megabytes(bundle_bytes(slim))} "
            f"({', '.join(slim.manifest.formats)}; ship this); {line}")
