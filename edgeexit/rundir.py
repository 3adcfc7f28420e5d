"""A run directory: the one place that knows the names of a run's artifacts, who made each from what (sha256
provenance), and the lock that keeps two commands from writing the same run at once.

    checkpoint.pt                 train      <- data
    pruned.pt, pruned.json        prune      <- checkpoint.pt (its sha256); pruned.pt holds no weights (below)
    calibration.json, curves.*    calibrate  <- pruned.pt or checkpoint.pt (its sha256) [+ profile.json]
    bundle/                       export     <- that checkpoint + calibration.json (their sha256)
    profile.json                  profile    <- bundle (its manifest checksum, and the checkpoint behind it)
    costmodel.json                build      <- a profile of the unpruned network's bundle (its checksum; latency-first)
    eval.json                     eval       <- bundle (its content sha256)
    report.{json,md}, *.png       report     <- eval.json + profile.json + the bundle's calibration.json

Only what a later stage reads is kept: pruned.pt names the exits kept and their ensemble weights, and takes every
weight from checkpoint.pt beside it (`pruned_record`, `resolve_pruned`: the same file name, its sha256 checked), so a
ResNet-18 run no longer holds a second 224 MB copy of weights (and optimizer state) it already has.

One source for each: every command reads a run's measurements and report from here, never from the copies a
bundle carries under report/ (those are what ships beside the model, written from the same bytes). The bundle's
own calibration.json is the one source of the thresholds it ships (int8 recalibrates them on export); this
directory's calibration.json is only what export starts from.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from edgeexit.bundle import sha256
from edgeexit.errors import ConfigError

LOCK = ".edgeexit.lock"


class StaleArtifactError(ConfigError):
    """An artifact was made from another input than the one it is being combined with."""


WEIGHTS_FROM = "checkpoint.pt"  # the one file a pruned.pt takes its weights from: beside it, in its run directory


def _holds_tensor(value) -> bool:
    if isinstance(value, dict):
        return any(_holds_tensor(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(v) for v in value)
    return type(value).__name__ in ("Tensor", "Parameter")


def pruned_record(ckpt: dict, *, kept_exits: list[int], ensemble: dict, checkpoint_sha256: str) -> dict:
    """What pruned.pt holds: the trained checkpoint's plain data (configs, input spec, history; no weights, optimizer
    or generator state), the exits kept, their ensemble weights, and the sha256 of checkpoint.pt, whose weights it
    uses (`resolve_pruned`). A few kilobytes, whatever the model's size."""
    plain = {k: v for k, v in ckpt.items() if k not in ("format", "state_dict", "unpruned_state_dict", "weights_from",
                                                        "state_is_unpruned") and not _holds_tensor(v)}
    return {**plain, "state_dict": {}, "weights_from": WEIGHTS_FROM, "kept_exits": list(kept_exits),
            "ensemble": ensemble, "provenance": {"checkpoint_sha256": checkpoint_sha256}}


def resolve_pruned(path: Path, ckpt: dict, *, read=None) -> dict:
    """A pruned.pt written by `pruned_record` with the weights of the checkpoint.pt beside it, checked by sha256:
    state_dict is then the whole trained network's (`state_is_unpruned`: edgeexit.train.checkpoint loads it, then cuts
    the kept exits), as is unpruned_state_dict. Other checkpoints are returned as they are."""
    source_name = ckpt.get("weights_from")
    if source_name is None:
        return ckpt
    from edgeexit.errors import CheckpointError
    from edgeexit.train.checkpoint import load_checkpoint

    if source_name != WEIGHTS_FROM:  # never a path a file chose: only the run directory's own checkpoint
        raise CheckpointError("a pruned checkpoint names another weights file than its run's checkpoint.pt",
                              got=repr(source_name)[:80], expected=repr(WEIGHTS_FROM),
                              hint="re-run `edgeexit prune` in the run directory")
    source = Path(path).parent / WEIGHTS_FROM
    want = (ckpt.get("provenance") or {}).get("checkpoint_sha256")
    if not source.is_file():
        raise CheckpointError(f"{Path(path).name} takes its weights from {WEIGHTS_FROM} beside it, which is missing",
                              got=str(source), expected=f"{WEIGHTS_FROM} with sha256 {str(want)[:12]}…",
                              hint="copy the whole run directory, or re-run `edgeexit train` and `edgeexit prune`")
    got = sha256(source)
    if got != want:
        raise StaleArtifactError(f"{path} was cut from another training than {source}",
                                 got=f"{WEIGHTS_FROM} sha256 {got[:12]}…", expected=f"sha256 {str(want)[:12]}…",
                                 hint=f"re-run `edgeexit prune --run-dir {Path(path).parent}`")
    full = (read or load_checkpoint)(source)  # `read`: the checkpoint reader itself, no second resolution
    if full.get("weights_from") is not None or full.get("kept_exits") is not None:
        raise CheckpointError(f"{source} is not a trained checkpoint", got="a pruned one",
                              expected="the checkpoint `edgeexit train` writes", hint="re-run `edgeexit train`")
    return {**ckpt, "state_dict": full["state_dict"], "unpruned_state_dict": full["state_dict"],
            "state_is_unpruned": True}


@dataclass
class RunDir:
    root: Path
    _hashes: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    checkpoint = property(lambda self: self.root / "checkpoint.pt")
    pruned = property(lambda self: self.root / "pruned.pt")
    pruned_json = property(lambda self: self.root / "pruned.json")
    calibration = property(lambda self: self.root / "calibration.json")
    curves_json = property(lambda self: self.root / "curves.json")
    curves_png = property(lambda self: self.root / "curves.png")
    profile = property(lambda self: self.root / "profile.json")
    costmodel = property(lambda self: self.root / "costmodel.json")
    eval_json = property(lambda self: self.root / "eval.json")
    report_md = property(lambda self: self.root / "report.md")
    report_json = property(lambda self: self.root / "report.json")
    bundle = property(lambda self: self.root / "bundle")

    def sha256(self, path: Path) -> str:
        """sha256 of a file, remembered while its size and mtime stay the same (checkpoints are large)."""
        st = Path(path).stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = sha256(Path(path))
        return self._hashes[key]

    def trained(self) -> Path:
        """The checkpoint later stages use: pruned.pt when `edgeexit prune` cut one from the current checkpoint.pt,
        else checkpoint.pt. A pruned.pt cut from an earlier training is refused."""
        if not self.pruned.is_file():
            return self.checkpoint
        made_from = self._pruned_from()
        if self.checkpoint.is_file() and made_from != self.sha256(self.checkpoint):
            raise StaleArtifactError(f"{self.pruned} was cut from another training than {self.checkpoint}",
                                     got=f"made from sha256 {str(made_from)[:12]}…",
                                     expected=f"sha256 {self.sha256(self.checkpoint)[:12]}…",
                                     hint=f"re-run `edgeexit prune --run-dir {self.root}` (or delete pruned.pt)")
        return self.pruned

    def _pruned_from(self) -> str | None:
        """The sha256 of the checkpoint pruned.pt was cut from: pruned.json says it, with pruned.pt's own sha256
        (so a build does not load the whole pruned checkpoint only for that); else pruned.pt's own record."""
        from edgeexit import jsonio

        try:
            record = jsonio.read_json(self.pruned_json).get("provenance") or {}
        except (OSError, ValueError, RecursionError, AttributeError):
            record = {}
        if isinstance(record, dict) and record.get("pruned_sha256") == self.sha256(self.pruned):
            return record.get("checkpoint_sha256")
        from edgeexit.train.checkpoint import load_checkpoint

        return (load_checkpoint(self.pruned).get("provenance") or {}).get("checkpoint_sha256")

    def require_made_from(self, what: Path, recorded: str | None, source: Path, command: str) -> None:
        """Refuse `what` unless it records `source`'s sha256 as what it was made from."""
        want = self.sha256(source)
        if recorded != want:
            raise StaleArtifactError(f"{what.name} was made from another {source.name} than the one in {self.root}",
                                     got=f"made from sha256 {str(recorded)[:12]}…", expected=f"sha256 {want[:12]}…",
                                     hint=f"re-run `{command} --run-dir {self.root}`")

    def _clean_dead_writers(self) -> None:
        """Remove what dead edgeexit writers left: only temporary directories that carry their writer's marker
        (jsonio) and our temporary bundle links. A user's `.notes.tmp` or look-alike folder is never touched."""
        from edgeexit import jsonio
        from edgeexit.bundle.store import clean_dead_writers

        jsonio.clean_dead_temps(self.root)
        clean_dead_writers(self.root, self.bundle.name)

    @contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Hold the run directory for `command`; a second writer is refused at once (not queued)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise ConfigError(f"run directory {self.root} is in use", got=f"held by {holder}",
                                  expected="one edgeexit command writing a run directory at a time",
                                  hint="wait for it to finish, or use another --run-dir") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} ({command})\n".encode(), 0)
            self._clean_dead_writers()
            yield
        finally:
            os.close(fd)  # closing releases the lock
