"""Issue 18's measurement: does the latency-first build ship something faster than a plain truncated network?

For each runtime (`cpu`: onnxruntime at batch 1 and 64; `android`: ExecuTorch at batch 1 and 8) and each batch size,
four deployments of one trained checkpoint are built and timed side by side on the same test images:

    shipped   what `build --max-drop D --batch B` ships: the unpruned network profiled here, the cost model fitted,
              one search over exit subsets x thresholds (edgeexit.deploy.stage.decide), then the normal export
    static    the fastest static truncation (the network cut at one exit, one plain call) whose TEST accuracy is at
              least the shipped deployment's (ranked by the cost model's measured static times; the unsplit model
              when no earlier cut is accurate enough)
    unsplit   the original model in one call, timed twice (edgeexit.timing's `full` and `full_repeat`, half a round
              apart): the null test; their disagreement is this run's noise
    mac       today's MACs-first bundle: prune + calibrate for the default MACs budget, as `build --budget` does

Timing discipline: edgeexit.timing's, the one every figure uses: one process per runtime, its thread pools pinned
(--threads, default every usable core) and every bundle opened on one backend; one untimed pass per deployment (what
it answers) then the warm-up, then rounds in which every deployment runs the same test images (whole batches), the
order rotated every round; ms/image per round as the median and IQR over rounds, ratios taken round by round. Test
accuracies are measured on the runtime, on the test split (--test-samples of it). Predicted ms come from the cost
model the shipped build fitted (at that batch size), given the exit fractions observed on the timed images.

Printed (and written to OUT/deploy.json, OUT/deploy.md): per runtime and batch, each deployment's test accuracy, drop
vs the unsplit model, measured ms/image (median, IQR), ratio to the unsplit model, predicted ms/image and the
prediction's error, and whether the shipped deployment is slower than the static truncation beyond this run's noise;
per runtime the search's time and the cost model's leave-one-out error and profile noise.

    PYTHONPATH=$PWD .venv/bin/python tools/bench/deploy.py --checkpoint runs/default/checkpoint.pt --out runs/bench-deploy
    PYTHONPATH=$PWD .venv/bin/python tools/bench/deploy.py --quick --out /tmp/bench-deploy   # tiny model, minutes

Expected run time on 2 idle cores (the default ResNet-18 on Fashion-MNIST, 32 px, 4 exits; the defaults below):
about 30-45 minutes (an estimate: never run there on an idle machine). Most of it is building: per runtime two
latency-first builds (each exports the unpruned network, profiles it at batch 1 and the largest batch, searches,
exports what it chose), the MACs-first bundle and the unpruned bundle: six exports, ExecuTorch's the slowest; then
the accuracy passes over the 10,000 test images and the timed rounds (15 rounds x 5 entries x 512 images per batch
size), a few minutes per runtime. The JSON records each stage's seconds and the load average before and after.
--quick: about 1 minute of CPU for cpu and 3 for android (tiny model, 64 images, 3 rounds); on a loaded machine
much longer. A --quick run checks that the script works; its figures mean nothing.
OUT/work/ is the bench's own scratch (the bundles it built, their run directories): it is replaced on every run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FORMAT = "edgeexit-bench-deploy/1"
RUNTIMES = {"cpu": ("cpu", [1, 64]), "android": ("android", [1, 8])}  # name -> (target, batch sizes)
ROWS = ("shipped", "static", "unsplit", "mac")  # the table's rows
KEYS = {"unsplit": "full"}  # a row's entry in edgeexit.timing's figures, where its name differs (timing.FULL)
QUICK_TRAIN = ["--dataset", "synthetic", "--backbone", "tiny_cnn", "--limit-train", "256", "--limit-val", "128",
               "--limit-test", "128", "--image-size", "16", "--epochs", "2"]


def log(*parts) -> None:
    from rich.console import Console

    Console(stderr=True).print(*parts)


# ---------------------------------------------------------------------------------------------------
# building the deployments (the library's own stages, nothing reimplemented)


def _fresh_run(root: Path, checkpoint: Path):
    from edgeexit.rundir import RunDir

    if root.exists():
        shutil.rmtree(root)  # our own scratch folder under --out
    root.mkdir(parents=True)
    shutil.copy(checkpoint, root / "checkpoint.pt")
    return RunDir(root)


def _method(checkpoint: Path) -> str:
    from edgeexit.train.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint)["train_config"].get("method", "aep")


def build_shipped(checkpoint: Path, root: Path, target: str, batch: int, max_drop: float) -> dict:
    """What `build --target T --max-drop D --batch B` ships from this checkpoint (its training skipped)."""
    from edgeexit.deploy.stage import decide
    from edgeexit.options import build_choices
    from edgeexit.pipeline import export_stage

    run = _fresh_run(root, checkpoint)
    choices = build_choices(target, None, None, None, None, _method(checkpoint), 64, max_drop=max_drop, batch=batch)
    with run.lock("bench"):
        t0 = time.perf_counter()
        d = decide(run, choices, temperature=True, profile_device="local", say=log)
        decided = time.perf_counter() - t0
        export_stage(run, run.trained(), target=choices.target, precision=choices.precision)
    chosen, cm = d.search.chosen, d.model
    return {"bundle": str(run.bundle), "costmodel": str(run.costmodel), "backend": d.backend,
            "exits": list(chosen.exits), "thresholds": list(chosen.thresholds), "kind": chosen.kind,
            "val_accuracy": chosen.accuracy, "val_full_accuracy": d.search.full.accuracy,
            "search_predicted_ms": chosen.cost, "search_seconds": d.search.seconds, "subsets": d.search.subsets,
            "val_samples": d.search.n_samples, "decide_seconds": decided,
            "cost_model": {"loo_error": cm.error(), "noise": cm.noise(), "trusted": cm.trusted,
                           "batches": cm.batch_sizes}}


def build_mac(checkpoint: Path, root: Path, target: str) -> dict:
    """Today's MACs-first bundle: prune and calibrate for the default MACs budget, as `build --budget` does."""
    from edgeexit import jsonio
    from edgeexit.options import DEFAULT_BUDGET, build_choices
    from edgeexit.pipeline import calibrate_stage, export_stage, prune_stage

    run = _fresh_run(root, checkpoint)
    method = _method(checkpoint)
    # the budget named: without one, build decides on the device (h-deploy makes --max-drop 0.5 the default)
    choices = build_choices(target, None, DEFAULT_BUDGET, None, None, method, 64)
    b = choices.budget
    with run.lock("bench"):
        if method == "aep" and b.kind != "ms":  # recipe._prune_and_calibrate's rule
            prune_stage(run, budget=b if choices.policy == "search" else None, score=choices.score)
        calibrate_stage(run, run.trained(), budget=b, policy=choices.policy, score=choices.score, curves=False)
        export_stage(run, run.trained(), target=choices.target, precision=choices.precision)
    kept = jsonio.read_json(run.pruned_json)["kept_exits"] if run.pruned.is_file() else None
    return {"bundle": str(run.bundle), "budget": b.describe(), "kept_exits": kept}


def build_unpruned(checkpoint: Path, root: Path, target: str) -> dict:
    """The whole network for the target: its reference model is the unsplit one, its probes the static truncations
    (thresholds do not matter: the bench never runs its exit loop)."""
    from edgeexit.calibrate import Budget
    from edgeexit.options import DEFAULT_BUDGET, build_choices
    from edgeexit.pipeline import calibrate_stage, export_stage

    run = _fresh_run(root, checkpoint)
    choices = build_choices(target, None, DEFAULT_BUDGET, None, None, _method(checkpoint), 64)
    with run.lock("bench"):
        calibrate_stage(run, run.checkpoint, budget=Budget("macs_fraction", 1.0), curves=False)
        export_stage(run, run.checkpoint, target=choices.target, precision=choices.precision)
    return {"bundle": str(run.bundle)}


# ---------------------------------------------------------------------------------------------------
# the worker: one process per runtime


def _open_all(spec: dict):
    """This process's thread pools pinned (edgeexit.timing), one backend, every bundle of the spec opened on it."""
    from edgeexit import timing
    from edgeexit.bundle import load_bundle
    from edgeexit.runtime import EarlyExitRuntime
    from edgeexit.runtime.backend import make_backend

    setup = timing.pin_threads(spec["backend"], spec.get("threads") or None)
    be = make_backend(spec["backend"], threads=setup["threads"])
    unpruned = load_bundle(Path(spec["unpruned"]))
    rts = {"unpruned": EarlyExitRuntime.open(unpruned, be), "mac": EarlyExitRuntime.open(spec["mac"], be)}
    for b, path in spec["shipped"].items():
        rts[f"shipped@{b}"] = EarlyExitRuntime.open(path, be)
    return be, unpruned, rts, setup


def _static_runner(be, bundle, rt, k: int):
    """A call of the network truncated at exit k, returning predictions: its static probe run as a bundle ending at k
    runs it, a plain call through the runtime (the unsplit reference model at the final exit, with no probe)."""
    from edgeexit.runtime.backend import segment_file

    from edgeexit.device_runner import plain_runtime

    probe = bundle.exits[k].static
    if probe is None:
        ref = rt.reference()
        return lambda x: ref.run(x).argmax(1)
    path, ref = segment_file(bundle, probe.segment, be.format, f"exit {k}'s static truncation")
    seg = be.open_segment(path, ref, probe.inputs, probe.outputs, bundle.manifest.batch.max)
    plain = plain_runtime(rt, seg, bundle.exits[k].cumulative_macs)  # as a bundle ending at k runs it, as profiled
    return lambda x: plain.run(x).predictions


def worker_accuracy(spec: dict) -> dict:
    """Test accuracy on the runtime: every static truncation (one pass through the unpruned bundle's exits), the
    unsplit model, and every early-exit bundle (with its exit fractions)."""
    from edgeexit.pipeline import test_split

    be, unpruned, rts, _ = _open_all(spec)
    x, y = test_split(unpruned, "test", spec["test_samples"])
    big = unpruned.manifest.batch.max
    unp = rts.pop("unpruned")
    correct = np.zeros(unp.num_exits, np.int64)
    full_correct = 0
    ref = unp.reference()
    for i in range(0, len(x), big):
        for k, o in enumerate(unp.exit_outputs(x[i:i + big])):
            correct[k] += int((o["logits"].argmax(1) == y[i:i + big]).sum())
        full_correct += int((ref.run(x[i:i + big]).argmax(1) == y[i:i + big]).sum())
    out = {"samples": int(len(y)), "static": (correct / len(y)).tolist(), "unsplit": full_correct / len(y),
           "exit_names": [e.name for e in unpruned.exits], "backend": be.name, "bundles": {}}
    for name, rt in rts.items():
        preds, exits = [], []
        for i in range(0, len(x), big):
            r = rt.run(x[i:i + big])
            preds.append(r.predictions)
            exits.append(r.exit_index)
        preds, exits = np.concatenate(preds), np.concatenate(exits)
        out["bundles"][name] = {"accuracy": float((preds == y).mean()),
                                "exit_fractions": (np.bincount(exits, minlength=rt.num_exits) / len(y)).tolist()}
    be.close()
    return out


def worker_time(spec: dict) -> dict:
    """Per batch size: every deployment over the same test images, timed by edgeexit.timing (warm-up, rotated rounds,
    the unsplit model twice for the null test), in ms/image per round; and what each answered on an untimed first
    pass over those images (its accuracy and, for the early-exit bundles, the share answering at each exit)."""
    from edgeexit import timing
    from edgeexit.pipeline import test_split

    be, unpruned, rts, setup = _open_all(spec)
    x_all, y_all = test_split(unpruned, "test", spec["samples"])
    unp = rts["unpruned"]
    ref = unp.reference()
    out: dict = {"backend": be.name, "setup": setup, "batches": {}}
    for b, k in spec["static"].items():
        batch = int(b)
        n = len(x_all) // batch * batch
        chunks = [x_all[i:i + batch] for i in range(0, n, batch)]
        loops = {"shipped": rts[f"shipped@{b}"], "mac": rts["mac"]}
        runs = {timing.FULL: lambda c: ref.run(c).argmax(1), "shipped": loops["shipped"].run,
                "static": _static_runner(be, unpruned, unp, k), "mac": loops["mac"].run}
        first: dict = {}
        for name, fn in runs.items():  # one untimed pass each: what it answers (and a first warm-up)
            results = [fn(c) for c in chunks]
            if name in loops:
                exits = np.concatenate([r.exit_index for r in results])
                results = [r.predictions for r in results]
                first[name] = {"exit_fractions": (np.bincount(exits, minlength=loops[name].num_exits) / n).tolist()}
            first.setdefault(name, {})["accuracy"] = float((np.concatenate(results) == y_all[:n]).mean())
        passes = {name: (lambda fn=fn: [fn(c) for c in chunks]) for name, fn in runs.items()}
        m = timing.measure(passes, rounds=spec["rounds"], calls=1, warmup=spec["warmup"],
                           setup={**setup, "batch": batch, "images": n})
        out["batches"][b] = {"images": n, "static_exit": k, "first_pass": first, "setup": m.setup,
                             "ms_per_image": {name: [v / n for v in t] for name, t in m.times.items()}}
    be.close()
    return out


def run_worker(kind: str, spec: dict, folder: Path) -> dict:
    """`kind` in a fresh process (one runtime per process), spec and result through files."""
    spec_path, result_path = folder / f"{kind}.spec.json", folder / f"{kind}.result.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    result_path.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, "--spec", str(spec_path),
                           "--result", str(result_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the {kind} worker failed:\n{proc.stdout[-4000:]}")
    return json.loads(result_path.read_text())


# ---------------------------------------------------------------------------------------------------
# the summary


def _reach(fractions: list[float]) -> list[float]:
    """Share of samples reaching each run, from the share answering at each exit."""
    return np.clip(np.cumsum(np.asarray(fractions, dtype=np.float64)[::-1])[::-1], 0.0, 1.0).tolist()


def choose_static(model, static_acc: list[float], shipped_acc: float, batch: int) -> int:
    """The fastest static truncation (measured static time in the cost model's profile) at equal or better test
    accuracy than the shipped deployment; the final exit (the unsplit model) when none is."""
    ok = [k for k, a in enumerate(static_acc) if a >= shipped_acc - 1e-12]
    return min(ok, key=lambda k: (model.static_ms(k, batch), k)) if ok else len(static_acc) - 1


def shipped_cost(model, batch: int):
    """The cost the build's search prices a deployment with, as its bundle runs: `stage.ShippedCost` where the build
    has it (a single exit through the exit loop), else `LatencyCost` (h-deploy: a one-segment bundle runs as one
    plain call, and the search costs it so)."""
    from edgeexit.deploy import stage
    from edgeexit.deploy.search import LatencyCost

    return getattr(stage, "ShippedCost", LatencyCost)(model, batch)


def summarise_batch(batch: int, timed: dict, acc: dict, shipped: dict, mac: dict, model) -> dict:
    from edgeexit import timing

    ms = timed["ms_per_image"]
    k = timed["static_exit"]
    E = len(acc["static"])
    cost = shipped_cost(model, batch)
    first = timed["first_pass"]
    mac_exits = mac["kept_exits"] or list(range(E))
    unsplit_acc = acc["unsplit"]
    rows_in = {
        "shipped": (shipped["exits"], acc["bundles"][f"shipped@{batch}"]["accuracy"],
                    cost.predict(shipped["exits"], _reach(first["shipped"]["exit_fractions"]))),
        "static": ([k], acc["static"][k], model.static_ms(k, batch)),
        "unsplit": (list(range(E)), unsplit_acc, model.full_ms(batch)),
        "mac": (mac_exits, acc["bundles"]["mac"]["accuracy"],
                cost.predict(mac_exits, _reach(first["mac"]["exit_fractions"]))),
    }
    rows = []
    for name, (exits, test_acc, predicted_call) in rows_in.items():
        key = KEYS.get(name, name)
        measured = timing.stats(ms[key])
        predicted = predicted_call / batch
        rows.append({"name": name, "exits": list(exits), "exit_names": [acc["exit_names"][e] for e in exits],
                     "test_accuracy": test_acc, "drop_pt": 100 * (unsplit_acc - test_acc),
                     "timed_accuracy": first[key]["accuracy"], "exit_fractions": first[key].get("exit_fractions"),
                     "ms_per_image": measured, "ratio_to_unsplit": timing.ratio(ms, key),
                     "predicted_ms_per_image": predicted, "prediction_error": predicted / measured["p50_ms"] - 1})
    # The profile was taken minutes before this timing, inside the build; a shared host's speed drifts by 5-10 % over
    # minutes (the unsplit model, the same program in both, shows it). The error of each predicted ratio to the unsplit
    # model is the model's own, with that drift taken out (both terms of each ratio are from one moment).
    unsplit = next(r for r in rows if r["name"] == "unsplit")
    drift = unsplit["prediction_error"]
    for r in rows:
        r["ratio_prediction_error"] = (1 + r["prediction_error"]) / (1 + drift) - 1
    noise = timing.null_test(ms[timing.FULL], ms[timing.REPEAT])
    vs_static = timing.ratio(ms, "shipped", "static")
    # slower beyond the noise: the median round-by-round shipped / static above 1 + this run's null-test noise
    return {"batch": batch, "images": timed["images"], "rounds": len(ms[timing.FULL]), "noise": noise,
            "setup": timed["setup"], "rows": rows, "times_ms_per_image": ms,
            "shipped_vs_static": {**vs_static, "slower_beyond_noise": vs_static["ratio"] > 1 + noise["noise"],
                                  "verdict": "noisy" if vs_static["noisy"] else
                                  "slower" if vs_static["ratio"] > 1 + noise["noise"] else "not slower"},
            "mac_vs_shipped": timing.ratio(ms, "mac", "shipped"),
            "max_prediction_error": max(abs(r["prediction_error"]) for r in rows), "drift": drift,
            "max_ratio_prediction_error": max(abs(r["ratio_prediction_error"]) for r in rows)}


def bench_runtime(name: str, args, checkpoint: Path, out: Path) -> dict:
    from edgeexit.deploy import CostModel

    target, batches = RUNTIMES[name]
    work = out / "work" / name
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    shipped = {}
    for b in batches:
        log(f"[bold]{name}: the latency-first build at batch {b} (--max-drop {args.max_drop})")
        shipped[b] = build_shipped(checkpoint, work / f"shipped-b{b}", target, b, args.max_drop)
    log(f"[bold]{name}: today's MACs-first bundle, and the unpruned network")
    mac = build_mac(checkpoint, work / "mac", target)
    unpruned = build_unpruned(checkpoint, work / "unpruned", target)
    built_s = time.perf_counter() - t0
    backend = shipped[batches[0]]["backend"]
    spec = {"backend": backend, "threads": args.threads, "unpruned": unpruned["bundle"], "mac": mac["bundle"],
            "shipped": {str(b): s["bundle"] for b, s in shipped.items()}, "test_samples": args.test_samples}
    log(f"[bold]{name}: test accuracy on {backend}")
    t1 = time.perf_counter()
    acc = run_worker("accuracy", spec, work)
    t2 = time.perf_counter()
    models = {b: CostModel.load(Path(shipped[b]["costmodel"])) for b in batches}
    statics = {str(b): choose_static(models[b], acc["static"], acc["bundles"][f"shipped@{b}"]["accuracy"], b)
               for b in batches}
    log(f"[bold]{name}: timing on {backend}, {args.rounds} rounds of {args.samples} test images per deployment")
    timed = run_worker("time", {**spec, "static": statics, "samples": args.samples, "rounds": args.rounds,
                                "warmup": args.warmup}, work)
    seconds = {"build": built_s, "accuracy": t2 - t1, "timing": time.perf_counter() - t2}
    return {"seconds": seconds, "target": target, "backend": timed["backend"], "exit_names": acc["exit_names"],
            "static_test_accuracy": acc["static"], "test_samples": acc["samples"], "mac": mac,
            "shipped": {str(b): s for b, s in shipped.items()},
            "batches": {str(b): summarise_batch(b, timed["batches"][str(b)], acc, shipped[b], mac, models[b])
                        for b in batches}}


# ---------------------------------------------------------------------------------------------------
# what people read


LABELS = {"shipped": "shipped (latency-first)", "static": "best static cut", "unsplit": "unsplit model",
          "mac": "MAC-chosen bundle"}
HEAD = ["deployment", "exits", "test acc", "drop pt", "ms/img", "IQR", "x unsplit", "predicted ms", "pred err",
        "pred err of x unsplit"]


def table_rows(batch: dict) -> list[list[str]]:
    out = []
    for r in batch["rows"]:
        m = r["ms_per_image"]
        out.append([LABELS[r["name"]], ",".join(r["exit_names"]), f"{100 * r['test_accuracy']:.2f} %",
                    f"{r['drop_pt']:+.2f}", f"{m['p50_ms']:.4f}", f"{m['p25_ms']:.4f}-{m['p75_ms']:.4f}",
                    f"{r['ratio_to_unsplit']['ratio']:.3f}", f"{r['predicted_ms_per_image']:.4f}",
                    f"{100 * r['prediction_error']:+.1f} %", f"{100 * r['ratio_prediction_error']:+.1f} %"])
    return out


def verdict(batch: dict) -> str:
    s, n = batch["shipped_vs_static"], batch["noise"]
    said = {"slower": "SLOWER than the best static cut beyond", "not slower": "not slower than the best static cut "
            "beyond", "noisy": f"NO VERDICT (run again on an idle machine): above the {100 * n['bound']:.0f} % bound,"}
    return (f"shipped / static {s['ratio']:.3f} (IQR {s['iqr'][0]:.3f}-{s['iqr'][1]:.3f}): {said[s['verdict']]} this "
            f"run's noise {100 * n['noise']:.1f} % (null test {n['null_ratio']:.3f}); MAC-chosen / shipped "
            f"{batch['mac_vs_shipped']['ratio']:.2f}x")


def runtime_note(name: str, rt: dict) -> str:
    parts = []
    for b, s in rt["shipped"].items():
        cm = s["cost_model"]
        parts.append(f"batch {b}: search {s['search_seconds']:.2f} s ({s['subsets']} subsets, {s['val_samples']} val "
                     f"samples), cost model leave-one-out error {100 * cm['loo_error']:.1f} %, profile noise "
                     f"{100 * cm['noise']:.1f} %{'' if cm['trusted'] else ' (NOISY)'}, measured prediction error "
                     f"max {100 * rt['batches'][b]['max_prediction_error']:.1f} %, of the ratios to the unsplit model "
                     f"max {100 * rt['batches'][b]['max_ratio_prediction_error']:.1f} % (the machine's drift between "
                     f"profile and timing, the unsplit model's error: {100 * rt['batches'][b]['drift']:+.1f} %)")
    return f"{name} ({rt['backend']}): " + "; ".join(parts)


def print_tables(doc: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 150)  # a log file keeps the table's columns whole
    for name, rt in doc["runtimes"].items():
        for b, batch in rt["batches"].items():
            t = Table(title=escape(f"{name}: {rt['backend']}, batch {b}, {batch['images']} test images x "
                                   f"{batch['rounds']} rounds (accuracy on {rt['test_samples']} test images)"))
            for col in HEAD:
                t.add_column(col, justify="right")
            for row in table_rows(batch):
                t.add_row(*map(escape, row))
            console.print(t)
            console.print(escape(verdict(batch)))
        console.print(escape(runtime_note(name, rt)))
        console.print(escape(f"{name}: " + ", ".join(f"{k} {v:.0f} s" for k, v in rt["seconds"].items())))
    console.print(f"machine load (1-min average) before {doc['load_before'][0]:.2f}, after {doc['load_after'][0]:.2f}; "
                  f"{doc['seconds']:.0f} s in all")


def markdown(doc: dict) -> str:
    lines = [f"# tools/bench/deploy.py: latency-first vs static truncation vs MACs (--max-drop {doc['max_drop']})", "",
             f"checkpoint `{doc['checkpoint']}`, host {doc['host']['cpu']} ({doc['host']['cpus']} CPUs), load average "
             f"before {doc['load_before'][0]:.2f} / after {doc['load_after'][0]:.2f}, {doc['seconds']:.0f} s", ""]
    for name, rt in doc["runtimes"].items():
        for b, batch in rt["batches"].items():
            lines += [f"## {name} ({rt['backend']}), batch {b}", "", "| " + " | ".join(HEAD) + " |",
                      "|" + "---|" * len(HEAD)]
            lines += ["| " + " | ".join(row) + " |" for row in table_rows(batch)]
            lines += ["", verdict(batch), ""]
        lines += [runtime_note(name, rt), ""]
    return "\n".join(lines)


def write_outputs(doc: dict, out: Path) -> None:
    from edgeexit.jsonio import write_atomic

    write_atomic(out / "deploy.json", json.dumps(doc, indent=1) + "\n")
    write_atomic(out / "deploy.md", markdown(doc))


# ---------------------------------------------------------------------------------------------------


def quick_checkpoint(out: Path) -> Path:
    """A tiny model on synthetic data, trained here (seconds)."""
    run = out / "work" / "quick-train"
    if run.exists():
        shutil.rmtree(run)
    proc = subprocess.run([sys.executable, "-m", "edgeexit.cli", "train", "--run-dir", str(run), *QUICK_TRAIN],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"training the quick model failed:\n{proc.stdout[-3000:]}")
    return run / "checkpoint.pt"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=Path("runs/default/checkpoint.pt"),
                   help="a trained checkpoint (default: the default build's)")
    p.add_argument("--out", type=Path, default=Path("runs/bench-deploy"),
                   help="folder for deploy.json, deploy.md and the bundles built (work/)")
    p.add_argument("--runtimes", default="cpu,android", help="comma-separated, of: " + ", ".join(RUNTIMES))
    p.add_argument("--max-drop", type=float, default=0.5, help="the shipped build's allowed drop (pt of val accuracy)")
    p.add_argument("--rounds", type=int, default=15, help="timed rounds (each deployment runs every image once each)")
    p.add_argument("--samples", type=int, default=512, help="test images timed per round (whole batches of them)")
    p.add_argument("--test-samples", type=int, default=None, help="test images for accuracy (default: the split)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes per deployment before the rounds, beyond "
                                                           "the first (recorded) pass")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads of the backend (0: its default)")
    p.add_argument("--quick", action="store_true", help="tiny model trained here, few samples and rounds: checks that "
                                                        "the script runs, never a figure")
    p.add_argument("--worker", choices=["accuracy", "time"], help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(args.spec.read_text())
        result = worker_accuracy(spec) if args.worker == "accuracy" else worker_time(spec)
        args.result.write_text(json.dumps(result))
        return 0
    names = [n.strip() for n in args.runtimes.split(",") if n.strip()]
    if not names or set(names) - set(RUNTIMES):
        p.error(f"--runtimes takes some of {', '.join(RUNTIMES)}; got {args.runtimes!r}")
    if args.quick:
        args.rounds, args.samples, args.warmup = min(args.rounds, 3), min(args.samples, 64), 0
    from edgeexit.bundle import sha256
    from edgeexit.device_runner import device_info
    from edgeexit.errors import EdgeExitError

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    checkpoint = quick_checkpoint(args.out) if args.quick else args.checkpoint
    if not checkpoint.is_file():
        p.error(f"no checkpoint at {checkpoint} (train one, or pass --checkpoint)")
    try:
        runtimes = {n: bench_runtime(n, args, checkpoint, args.out) for n in names}
    except EdgeExitError as err:  # a drop nothing meets, a runtime that is not installed: said, not a traceback
        print(f"tools/bench/deploy.py: {err}", file=sys.stderr)
        return 2
    doc = {"format": FORMAT, "checkpoint": str(checkpoint), "checkpoint_sha256": sha256(checkpoint),
           "quick": args.quick, "max_drop": args.max_drop,
           "settings": {"rounds": args.rounds, "samples": args.samples, "test_samples": args.test_samples,
                        "warmup": args.warmup, "threads": args.threads},
           "host": device_info(), "load_before": list(load_before), "load_after": list(os.getloadavg()),
           "seconds": time.perf_counter() - t0, "runtimes": runtimes}
    write_outputs(doc, args.out)
    print_tables(doc)
    print(f"wrote {args.out / 'deploy.json'} and {args.out / 'deploy.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
