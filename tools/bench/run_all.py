"""The whole benchmark suite, one script after another, each in its own process; every script's table is printed and
its JSON written under --out; a summary says how long each took against the suite's stated budget.

Budget: BUDGET_MIN minutes on a quiet 2-core x86 machine with the default build (ResNet-18, Fashion-MNIST, 32 px),
exports from the checkpoint included. --quick runs everything at tiny size (tiny_cnn, 16 px, a few rounds) in a few
minutes: it checks the suite runs, and measures nothing worth reading (tests/test_bench.py runs it).

    python tools/bench/run_all.py --checkpoint runs/default/checkpoint.pt [--bundle runs/default/bundle]
    python tools/bench/run_all.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402

BUDGET_MIN = 40  # stated for the full suite on a quiet 2-core machine; the summary says whether it held
QUICK_BUDGET_MIN = 15  # --quick on a loaded 2-core machine
HERE = Path(__file__).resolve().parent
# (script, takes the user's bundle/checkpoint)
SCRIPTS = [("early_exit.py", True), ("realisation.py", True), ("overhead.py", False), ("scaling.py", False),
           ("prune_speed.py", False), ("calibrate_speed.py", False)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, help="the bundle early_exit and realisation time (cpu target)")
    p.add_argument("--checkpoint", type=Path, help="the checkpoint the cpu, android fp32 and int8 bundles are "
                   "exported from (default build: runs/default/checkpoint.pt)")
    p.add_argument("--out", type=Path, default=suite.RESULTS, help="where every script's JSON (and scaling.png) goes")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the suite runs")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads of every model (0 = usable cores)")
    p.add_argument("--only", help="comma-separated script names (e.g. early_exit,scaling)")
    a = p.parse_args()
    if not (a.quick or a.bundle or a.checkpoint):
        p.error("give --checkpoint (and/or --bundle), or --quick")
    a.out.mkdir(parents=True, exist_ok=True)
    scratch = a.out / "scratch"
    only = set(a.only.split(",")) if a.only else None
    took, failed = {}, []
    start = time.perf_counter()
    for script, takes_model in SCRIPTS:
        name = script.removesuffix(".py")
        if only and name not in only:
            continue
        argv = [sys.executable, str(HERE / script), "--json", str(a.out / f"{name}.json"), "--scratch", str(scratch),
                "--threads", str(a.threads)]
        if a.quick:
            argv.append("--quick")
        if takes_model and a.bundle:
            argv += ["--bundle", str(a.bundle)]
        if takes_model and a.checkpoint:
            argv += ["--checkpoint", str(a.checkpoint)]
        if name == "scaling":
            argv += ["--png", str(a.out / "scaling.png")]
        print(f"== {name}", flush=True)
        t = time.perf_counter()
        rc = subprocess.call(argv, env={**os.environ, "PYTHONPATH": suite._pythonpath()})
        took[name] = time.perf_counter() - t
        if rc != 0:
            failed.append(name)
    total = time.perf_counter() - start
    budget = QUICK_BUDGET_MIN if a.quick else BUDGET_MIN
    suite.table("benchmark suite", ["script", "minutes", "status"],
                [[n, f"{s / 60:.1f}", "FAILED" if n in failed else "ok"] for n, s in took.items()],
                note=f"total {total / 60:.1f} min against a stated {budget} min"
                     f" ({'within' if total <= 60 * budget else 'OVER'}); JSON under {a.out}")
    (a.out / "run_all.json").write_text(json.dumps({"minutes": {n: s / 60 for n, s in took.items()},
                                                    "total_minutes": total / 60, "budget_minutes": budget,
                                                    "failed": failed, "quick": a.quick, "machine": suite.machine()},
                                                   indent=1))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
