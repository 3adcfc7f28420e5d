"""Deployment targets: one `edgeexit/presets/targets/<name>.toml` each (formats, precision, delegate,
batch range, where to profile, what it needs), and whether a target can work on this machine."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeexit import tomlfiles
from edgeexit.errors import ConfigError

ENV_VAR = "EDGEEXIT_TARGETS_DIR"
FORMATS = ("onnx", "engine", "pte", "pt2")  # as in the bundle manifest (edgeexit.bundle.FORMATS)
PRECISIONS = ("fp32", "fp16", "int8")
PROFILE_LOCATIONS = ("host", "device")
_REQUIRED = ("name", "description", "formats", "precision", "delegate", "batch", "profile", "requires", "needs_gpu")
_OPTIONAL = ("extra", "install_hint")


@dataclass(frozen=True)
class Target:
    """A deployment target as described by its TOML file.

    `precision` lists the supported precisions, the default first. `runtime` (derived: the family of the
    registry's backends that runs the first format) is what the bundle runs on; `delegate` is within it the
    onnxruntime execution provider, the ExecuTorch delegate, "tensorrt" for TensorRT engines (no delegate).
    `requires` are Python modules that must be importable; `extra` is the pip extra that provides them
    (`pip install -e .[extra]`).
    """

    name: str
    description: str
    formats: tuple[str, ...]
    precision: tuple[str, ...]
    delegate: str
    batch: tuple[int, int]
    profile: str
    requires: tuple[str, ...]
    needs_gpu: bool
    extra: str | None = None
    install_hint: str | None = None
    path: Path | None = None

    @property
    def default_precision(self) -> str:
        return self.precision[0]

    @property
    def runtime(self) -> str | None:
        """The runtime family its bundles run on (the manifest's `runtime`); None: no backend runs its format."""
        from edgeexit.runtime.registry import family_of

        return family_of(self.formats)


@dataclass(frozen=True)
class TargetStatus:
    """Whether a target works on this machine; `reason` says what is missing and how to get it."""

    ok: bool
    reason: str


def targets_dir() -> Path:
    """$EDGEEXIT_TARGETS_DIR, else the package's `edgeexit/presets/targets/` (see tomlfiles.preset_dir)."""
    return tomlfiles.preset_dir("targets", ENV_VAR)


def _target_files() -> dict[str, Path]:
    folder = targets_dir()
    if not folder.is_dir():
        raise ConfigError(
            "targets folder not found",
            got=str(folder),
            expected="a folder of <name>.toml files",
            hint=f"set {ENV_VAR}=/path/to/targets",
        )
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def _string_list(path: Path, key: str, value: Any, *, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """A string or a non-empty list of strings, as a tuple; each in `allowed` when given."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
        raise ConfigError(f"{path}: `{key}` must be a string or a list of strings", got=value)
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            raise ConfigError(f"{path}: unknown `{key}`", got=bad or items, expected=" | ".join(allowed))
    return tuple(items)


def _parse(path: Path, raw: dict[str, Any]) -> Target:
    missing = [k for k in _REQUIRED if k not in raw]
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if missing or unknown:
        raise ConfigError(
            f"{path}: wrong keys",
            got=f"missing {missing}, unknown {unknown}",
            expected=", ".join(_REQUIRED) + " (optional: " + ", ".join(_OPTIONAL) + ")",
        )
    for key in ("name", "description", "delegate", *(k for k in _OPTIONAL if k in raw)):
        if not isinstance(raw[key], str) or not raw[key]:
            raise ConfigError(f"{path}: `{key}` must be a non-empty string", got=raw[key])
    if raw["name"] != path.stem:
        raise ConfigError(f"{path}: `name` must match the file name", got=raw["name"], expected=path.stem)
    if raw["profile"] not in PROFILE_LOCATIONS:
        raise ConfigError(f"{path}: unknown `profile`", got=raw["profile"], expected=" | ".join(PROFILE_LOCATIONS))
    if not isinstance(raw["needs_gpu"], bool):
        raise ConfigError(f"{path}: `needs_gpu` must be true or false", got=raw["needs_gpu"])
    batch = raw["batch"]
    lo, hi = (batch.get("min"), batch.get("max")) if isinstance(batch, dict) else (None, None)
    if (
        not isinstance(batch, dict)
        or set(batch) != {"min", "max"}
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi))
        or not 1 <= lo <= hi
    ):
        raise ConfigError(f"{path}: bad `batch`", got=batch, expected="{ min = 1, max = 64 } with 1 <= min <= max")
    return Target(
        name=raw["name"],
        description=raw["description"],
        formats=_string_list(path, "formats", raw["formats"], allowed=FORMATS),
        precision=_string_list(path, "precision", raw["precision"], allowed=PRECISIONS),
        delegate=raw["delegate"],
        batch=(lo, hi),
        profile=raw["profile"],
        requires=_string_list(path, "requires", raw["requires"]),
        needs_gpu=raw["needs_gpu"],
        extra=raw.get("extra"),
        install_hint=raw.get("install_hint"),
        path=path,
    )


def load_target(name_or_path: str | Path) -> Target:
    """A target by name (`<name>.toml` in `targets_dir()`) or by the path of a TOML file."""
    folder = targets_dir()
    if not folder.is_dir():
        _target_files()  # raises the "targets folder not found" error
    path = tomlfiles.find(folder, name_or_path, "target", "`edgeexit targets` lists them; a path to a .toml file works too")
    return _parse(path, tomlfiles.read(path, "target"))


def list_targets() -> list[Target]:
    """Every target in the targets folder, by name."""
    return [load_target(path) for path in _target_files().values()]


def _importable(module: str) -> bool:
    # find_spec imports the parent packages of a dotted name ("cuda" for "cuda.bindings"), not the module.
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _cuda_devices() -> int:
    try:
        import torch
    except ImportError:  # a runtime-only install (no torch): ask the CUDA driver through cuda-python
        from edgeexit.runtime.trt_device import cuda_device_count

        return cuda_device_count()
    return torch.cuda.device_count()


def check_target(target: Target) -> TargetStatus:
    """Whether `target` can work here: its modules are importable, a CUDA device exists when it
    needs one, and the registry's backend for its runtime and delegate works here. Never creates a TensorRT
    runtime (that segfaults without a GPU) and imports nothing but onnxruntime and torch."""
    problems = []
    missing = [m for m in target.requires if not _importable(m)]
    if missing:
        how = f"pip install -e '.[{target.extra}]'" if target.extra else "install them"
        problems.append(f"missing Python module(s) {', '.join(missing)} ({how})")
    if target.needs_gpu and _cuda_devices() == 0:
        problems.append("needs a CUDA device (none found here)")
    if not problems:  # what the target declares is here: does its own backend work (e.g. the provider)?
        problems += _run_problems(target)
    if problems and target.install_hint:
        problems.append(target.install_hint)
    return TargetStatus(ok=not problems, reason="; ".join(problems) if problems else "ready")


def _run_problems(target: Target) -> list[str]:
    from edgeexit.runtime.registry import for_family

    backend = for_family(target.runtime, target.delegate)
    if backend is None:
        return [f"no backend in this edgeexit runs {target.runtime or target.formats[0]} with {target.delegate}"]
    ok, reason, install = backend.available()
    return [] if ok else [f"{backend.name}: {reason} ({install})"]


def run_here(target: Target) -> bool:
    """Its bundles can run on this machine: the registry's backend for its runtime and delegate works here."""
    from edgeexit.runtime.registry import for_family

    backend = for_family(target.runtime, target.delegate)
    return backend is not None and backend.available().ok


def export_here(target: Target) -> bool:
    """Its bundles can be written on this machine: each format it exports (not those built on its device) has a
    CPU backend here that checks the lowering against torch (so none without the build extra's torch and onnx)."""
    from edgeexit.runtime.registry import host_backend_of

    if not (_importable("torch") and _importable("onnx")):
        return False
    backends = [host_backend_of(f) for f in target.formats]
    return all(b is None or b.available().ok for b in backends) and any(b is not None for b in backends)


def targets_table() -> list[dict[str, Any]]:
    """One row per target for `edgeexit targets`: name, formats, precision, requires (strings for
    display), works_here, export_here and run_here (bools) and reason."""
    rows = []
    targets = list_targets()
    if not targets:
        raise ConfigError("no targets found", got="an empty targets folder", expected="targets/*.toml",
                          hint="set EDGEEXIT_TARGETS_DIR to a folder of target files")
    for target in targets:
        status = check_target(target)
        rows.append(
            {
                "name": target.name,
                "formats": ", ".join(target.formats),
                "precision": ", ".join(target.precision),
                "requires": ", ".join(target.requires) or "-",
                "works_here": status.ok,
                "export_here": export_here(target),
                "run_here": run_here(target),
                "reason": status.reason,
            }
        )
    return rows
