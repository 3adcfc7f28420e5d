"""Every backend this edgeexit has, in one table: what it runs, on what, whether it works here and what to install.

The rest of edgeexit (compare, profile, eval, targets, the benches, the CLI's help) loops over `REGISTRY` instead of
naming backends. A backend belongs to a **family** (the runtime a bundle's manifest names in `runtime`) and runs one
segment format; within its family it runs bundles for one `provider` (the manifest's `delegate`: onnxruntime's
execution provider, the ExecuTorch delegate, the torch device; TensorRT has none: it runs its engines itself).

`available()` is lazy: it imports the optional runtime only when asked, never at import of this module, and never
creates a TensorRT runtime without a CUDA device (that segfaults).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from edgeexit.errors import ConfigError, EdgeExitError

if TYPE_CHECKING:  # types only: importing this module costs no numpy or pydantic (the CLI's help reads it)
    from edgeexit.bundle.manifest import Format, Manifest, Runtime
    from edgeexit.runtime.backend import Backend


class Availability(NamedTuple):
    ok: bool
    reason: str  # "ready", or what is missing on this machine
    install: str | None  # what to install to get it (None when ready)


@dataclass(frozen=True)
class BackendSpec:
    name: str
    format: Format  # the segment format it runs
    family: Runtime  # the runtime a manifest names (`runtime`)
    provider: str | None  # the manifest `delegate` it is the default backend for (None: the family has no delegate)
    needs_gpu: bool
    module: str  # where its class lives: imported only by `make`
    cls: str
    install: str  # what brings its runtime here
    probe: Callable[[], str | None]  # None when it can run here, else why not
    host_target: str | None = None  # run locally, it measures this host's CPU: the target a local profile is of

    def available(self) -> Availability:
        why = self.probe()
        return Availability(True, "ready", None) if why is None else Availability(False, why, self.install)

    def make(self, **options: Any) -> "Backend":
        """The backend object; a missing optional runtime raises RuntimeMissingError inside its module."""
        return getattr(importlib.import_module(self.module), self.cls)(**options)


def _importable(module: str) -> bool:
    try:  # find_spec imports the parent packages of a dotted name, not the module itself
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _missing(*modules: str) -> str | None:
    gone = [m for m in modules if not _importable(m)]
    return f"missing Python module(s) {', '.join(gone)}" if gone else None


def _onnxruntime() -> str | None:
    return _missing("onnxruntime")


def _onnxruntime_cuda() -> str | None:
    why = _missing("onnxruntime")
    if why is not None:
        return why
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return "this onnxruntime has no CUDAExecutionProvider"
    return None


def _torch() -> str | None:
    return _missing("torch")


def _torch_cuda() -> str | None:
    why = _missing("torch")
    if why is not None:
        return why
    import torch

    return None if torch.cuda.is_available() else "needs a CUDA device (torch finds none here)"


def _executorch() -> str | None:
    return _missing("executorch")


def _tensorrt() -> str | None:
    if not (_importable("tensorrt") or _importable("tensorrt_rtx")):
        return "missing Python module(s) tensorrt (or tensorrt_rtx)"
    from edgeexit.runtime.trt_device import cuda_device_count

    if cuda_device_count() == 0:  # never open an engine without a CUDA device (TensorRT segfaults)
        return "needs a CUDA device (cuda-python finds none here)"
    return None


GPU_HINT = "on a machine with an NVIDIA GPU"
# The order is the order of `edgeexit compare`'s columns (after the bundle's own backend, which comes first).
REGISTRY: dict[str, BackendSpec] = {s.name: s for s in (
    BackendSpec("onnxruntime", "onnx", "onnxruntime", "CPUExecutionProvider", False, "edgeexit.runtime.ort",
                "OrtBackend", "pip install onnxruntime (a dependency of edgeexit: pip install -e .)", _onnxruntime,
                host_target="cpu"),
    BackendSpec("onnxruntime-cuda", "onnx", "onnxruntime", "CUDAExecutionProvider", True, "edgeexit.runtime.ort",
                "OrtCudaBackend", f"install onnxruntime-gpu==1.32.0 in place of onnxruntime, {GPU_HINT}",
                _onnxruntime_cuda),
    BackendSpec("executorch", "pte", "executorch", "xnnpack", False, "edgeexit.runtime.executorch_rt",
                "ExecuTorchBackend", "pip install -e '.[executorch]'", _executorch),
    BackendSpec("torch", "pt2", "torch", "cpu", False, "edgeexit.runtime.torch_pt2", "TorchBackend",
                "pip install torch==2.14.1", _torch, host_target="cpu"),
    BackendSpec("torch-cuda", "pt2", "torch", "cuda", True, "edgeexit.runtime.torch_pt2", "TorchCudaBackend",
                f"a CUDA build of torch, {GPU_HINT}", _torch_cuda),
    BackendSpec("tensorrt", "engine", "tensorrt", None, True, "edgeexit.runtime.tensorrt_rt", "TensorRTBackend",
                f"pip install -e '.[tensorrt]' {GPU_HINT} ('.[jetson]' on a Jetson)", _tensorrt),
)}
CPP_RUNNER_FAMILY: Runtime = "executorch"  # what the C++ runner (edgeexit/glue/executorch) runs
FAMILY_OF_FORMAT: dict[str, Runtime] = {s.format: s.family for s in REGISTRY.values()}  # each format: one family


def spec(name: str) -> BackendSpec:
    """A registered backend by name; a ConfigError naming them all otherwise."""
    if name not in REGISTRY:
        raise ConfigError("unknown backend", got=name, expected=" | ".join(REGISTRY))
    return REGISTRY[name]


def make_backend(name: str, **options: Any) -> "Backend":
    return spec(name).make(**options)


def family_of(formats: tuple[str, ...] | list[str]) -> Runtime | None:
    """The runtime family that runs a target's first format (None: a format no backend runs)."""
    return FAMILY_OF_FORMAT.get(formats[0]) if formats else None


def provider_of(family: str | None, delegate: str) -> str | None:
    """The provider a target's `delegate` names within its family (a family without delegates: None)."""
    has = any(s.family == family and s.provider is not None for s in REGISTRY.values())
    return delegate if has else None


def for_family(family: str | None, delegate: str | None) -> BackendSpec | None:
    """The backend that runs a target or bundle of `family` with `delegate` by default; None when none does."""
    provider = provider_of(family, delegate or "")
    return next((s for s in REGISTRY.values() if s.family == family and s.provider == provider), None)


def default_backend(manifest: Manifest) -> str:
    """The backend the bundle's target runs on (its manifest's `runtime` and `delegate`)."""
    m = manifest
    own = for_family(m.runtime, m.delegate)
    if own is not None and own.format not in m.formats and own.format == "engine":
        # engines are device-specific: built there, not at export
        raise ConfigError(f"the TensorRT engines of this {m.target} bundle are not built yet", got=f"formats {m.formats}",
                          expected=own.format, hint="build them on the device: edgeexit engines BUNDLE; "
                          f"meanwhile name a backend, e.g. --backend {_emulation()} (CPU emulation)")
    if own is None or own.format not in m.formats:
        known = ", ".join(f"{s.family}+{s.provider}" if s.provider else s.family for s in REGISTRY.values())
        raise ConfigError(f"no backend in this edgeexit runs {m.runtime} bundles with delegate {m.delegate}",
                          got=f"target {m.target}, formats {m.formats}", expected=known,
                          hint=f"name one explicitly, e.g. --backend {_emulation()} (CPU emulation); "
                          f"backends: {', '.join(REGISTRY)}")
    return own.name


def backends_for(manifest: Manifest) -> list[str]:
    """The registered backends that can run this bundle's files (here or elsewhere), its default backend first."""
    names = [s.name for s in REGISTRY.values() if s.format in manifest.formats]
    try:
        own = default_backend(manifest)
    except ConfigError:
        return names
    return sorted(names, key=lambda n: n != own)


def available_backends(manifest: Manifest | None = None) -> list[str]:
    """The backends that work on this machine (of those that can run `manifest`, its own first, when given)."""
    pool = backends_for(manifest) if manifest is not None else list(REGISTRY)
    return [n for n in pool if REGISTRY[n].available().ok]


def emulation_backend(manifest: Manifest) -> str | None:
    """The backend that emulates any target on this host's CPU: the first CPU backend that can run the bundle."""
    return next((n for n in backends_for(manifest) if REGISTRY[n].host_target is not None
                 and not REGISTRY[n].needs_gpu), None)


def _emulation() -> str:
    return next(s.name for s in REGISTRY.values() if s.host_target is not None)


def host_target(name: str) -> str | None:
    """The target a local profile on backend `name` measures (this host's CPU), None: the bundle's own target."""
    s = REGISTRY.get(name)
    return None if s is None else s.host_target


def backend_help() -> str:
    """The CLI's --backend help, from the table."""
    return f"{' | '.join(REGISTRY)} (default: the bundle's target's)"


def measure_backend(manifest: Manifest) -> tuple[str, str | None]:
    """(backend, None): the bundle's own backend when it works here; else (the CPU emulation, why not the own)."""
    try:
        own = spec(default_backend(manifest))
    except ConfigError as err:
        why = err.what
    else:
        ok, why, install = own.available()
        if ok:
            try:  # available() looks; opening it proves it (a runtime can be present and broken)
                own.make().close()
                return own.name, None
            except EdgeExitError as err:
                why = err.what
        else:
            why = f"{own.name}: {why} ({install})"
    return emulation_backend(manifest) or _emulation(), why


def host_backend_of(fmt: str) -> BackendSpec | None:
    """The backend that runs `fmt` on this host's CPU (None: a format built and run on its device only)."""
    return next((s for s in REGISTRY.values() if s.format == fmt and not s.needs_gpu), None)


# the distributions that bring a runtime (pip names): what `edgeexit --version` lists beside edgeexit's own
RUNTIME_DISTRIBUTIONS = ("torch", "onnxruntime", "onnxruntime-gpu", "executorch", "tensorrt", "tensorrt_rtx")


def runtime_versions() -> list[str]:
    """"name version" of each runtime distribution installed here, from package metadata (importing torch or executorch
    only to read a version would take seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for dist in RUNTIME_DISTRIBUTIONS:
        try:
            found.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            continue
    return found


def version_text() -> str:
    """`edgeexit --version`: edgeexit's version, then each runtime installed beside it."""
    from edgeexit import __version__

    return "\n".join([f"edgeexit {__version__}", *runtime_versions()])
