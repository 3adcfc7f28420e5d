"""What every benchmark in tools/bench/ shares: its common options, one worker process per runtime, the rich table it
prints and the JSON it writes, and the bundles it times (given, exported from a checkpoint, or tiny ones in --quick
mode). How anything is timed is `edgeexit.timing`'s business, not this file's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path("runs/bench")  # where the JSON goes unless --json says otherwise
# the tiny synthetic training of --quick mode (tests/conftest.py's QUICK, one epoch)
QUICK_TRAIN = ["--dataset", "synthetic", "--backbone", "tiny_cnn", "--limit-train", "256", "--limit-val", "128",
               "--limit-test", "128", "--image-size", "16", "--epochs", "1"]


def parser(doc: str, name: str) -> argparse.ArgumentParser:
    """The options every benchmark takes; `name` names its JSON (RESULTS/name.json)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=RESULTS / f"{name}.json", help="where the results go (JSON)")
    p.add_argument("--quick", action="store_true", help="tiny models and few rounds: checks the script runs, "
                   "measures nothing worth reading")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads of every model (0 = the cores this "
                   "process may use); recorded in the JSON")
    p.add_argument("--scratch", type=Path, default=None, help="where bundles made here go (default: a temp dir)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # JSON: this process is one runtime's worker
    return p


def in_worker(script: str, payload: dict) -> dict:
    """`script --worker PAYLOAD` in a fresh process (one runtime per process); the JSON its last line prints."""
    out = subprocess.run([sys.executable, script, "--worker", json.dumps(payload)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": _pythonpath()})
    if out.returncode != 0:
        raise SystemExit(f"{Path(script).name} worker failed ({payload}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def answer(doc: dict) -> None:
    """A worker's result: one JSON line, last on stdout."""
    print(json.dumps(doc), flush=True)


def _pythonpath() -> str:
    """This checkout first, so a worker imports the same edgeexit as its parent."""
    root = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + rest if rest else "")


def table(title: str, columns: list[str], rows: list[list], note: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, caption=note)
    for c in columns:
        t.add_column(c, justify="left" if c in columns[:1] else "right")
    for r in rows:
        t.add_row(*("-" if v is None else v if isinstance(v, str) else f"{v:.3f}" if isinstance(v, float) else str(v)
                    for v in r))
    Console(width=max(160, shutil.get_terminal_size().columns)).print(t)


def write_json(path: Path, doc: dict) -> None:
    """Written whole or not at all (edgeexit.jsonio.write_atomic)."""
    from edgeexit.jsonio import write_atomic

    doc = {"script": Path(sys.argv[0]).name, "argv": sys.argv[1:], "written": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                               time.gmtime()),
           "machine": machine(), **doc}
    write_atomic(path, json.dumps(doc, indent=1))
    print(f"results: {path}")


def machine() -> dict:
    from edgeexit.device_runner import device_info

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {**device_info(), "load_1min": load}


def scratch(args) -> Path:
    if args.scratch:
        args.scratch.mkdir(parents=True, exist_ok=True)
        return args.scratch
    return Path(tempfile.mkdtemp(prefix="edgeexit-bench."))


def edgeexit(*argv: str) -> None:
    """The edgeexit CLI of this checkout in its own process; its output only when it fails."""
    res = subprocess.run([sys.executable, "-m", "edgeexit", *argv], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": _pythonpath()})
    if res.returncode != 0:
        raise SystemExit(f"edgeexit {' '.join(argv)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")


def tiny_run(base: Path) -> Path:
    """--quick mode's run directory, base/tiny: a tiny synthetic model (tiny_cnn, 16 px, all 3 exits: unpruned, so
    the heads and the exit loop have something to do), trained and calibrated once. A checkpoint.pt already there
    (a test's tiny build) is used as it is."""
    run = base / "tiny"
    if not (run / "checkpoint.pt").is_file():
        edgeexit("train", "--run-dir", str(run), *QUICK_TRAIN)
    if not (run / "calibration.json").is_file():
        edgeexit("calibrate", "--run-dir", str(run))
    return run


def run_from_checkpoint(checkpoint: Path, base: Path) -> Path:
    """A run directory of our own holding copies of a checkpoint and what was made beside it (pruning, calibration),
    so exports never write into the user's run."""
    run = base / "run"
    run.mkdir(parents=True, exist_ok=True)
    for name in ("checkpoint.pt", "pruned.pt", "pruned.json", "calibration.json"):
        src = checkpoint if name == "checkpoint.pt" else checkpoint.parent / name
        if src.is_file() and not (run / name).is_file():
            shutil.copy(src, run / name)
    if not (run / "calibration.json").is_file():
        edgeexit("calibrate", "--run-dir", str(run))
    return run


def exported(run: Path, target: str, precision: str | None = None) -> Path:
    """run's network exported for `target` (and precision) at run/bundle-TARGET[-PRECISION], made once."""
    out = run / f"bundle-{target}{'-' + precision if precision else ''}"
    if not (out / "manifest.json").is_file():
        edgeexit("export", "--run-dir", str(run), "--target", target, "--out", str(out),
                 *(["--precision", precision] if precision else []))
    return out


def bundles(args, targets: list[tuple[str, str | None]]) -> list[Path]:
    """The bundles a runtime benchmark times: each --bundle, and each (target, precision) exported from --checkpoint
    (the cpu one only when no --bundle stands for it); with neither, or with --quick, from a tiny build."""
    given = list(getattr(args, "bundle", None) or [])
    checkpoint = getattr(args, "checkpoint", None)
    if given and not checkpoint:
        return given
    base = scratch(args)
    run = tiny_run(base) if args.quick or not checkpoint else run_from_checkpoint(checkpoint, base)
    return given + [exported(run, t, p) for t, p in targets if not (given and t == "cpu")]


def open_runtime(bundle, backend: str | None, threads: int):
    """(runtime, setup): the bundle on `backend` (default: its own) with every thread pool of this process pinned to
    one count first (edgeexit.timing.pin_threads), the unsplit model and the segments in the same runtime."""
    from edgeexit.bundle import load_bundle
    from edgeexit.runtime import EarlyExitRuntime, default_backend
    from edgeexit.timing import pin_threads

    b = load_bundle(Path(bundle))
    setup = pin_threads(backend or default_backend(b), threads)
    rt = EarlyExitRuntime.open(b, setup["backend"], threads=setup["threads"])
    return b, rt, setup


def passes(fn, x, batch: int):
    """A call that runs `fn` over every whole batch of x once (the unit a runtime benchmark times)."""
    chunks = [x[i:i + batch] for i in range(0, len(x) - batch + 1, batch)] or [x]
    return lambda: [fn(c) for c in chunks]


def ratio_cells(r: dict) -> list:
    """A ratio's table cells: the median (or NOISY), IQR, the null test."""
    return [("NOISY " if r["noisy"] else "") + f"{r['ratio']:.3f}", f"{r['iqr'][0]:.3f}-{r['iqr'][1]:.3f}",
            f"{r['null_ratio']:.3f} ({100 * r['noise']:.1f} %)"]


RATIO_COLUMNS = ["ratio", "IQR", "null test (noise)"]
