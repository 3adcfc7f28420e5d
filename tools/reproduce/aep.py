"""AEP, "Anticipate, Ensemble and Prune" (papers/000) in miniature: a single-exit network against the early-exit
ensembles EEdesc / EEasc / EEmix / EEunif, without and with pruning (EE* in the paper): the change of test accuracy,
parameters, MACs and measured latency against the single-exit network, as the paper's Tables III-VII give them
(percentage change, (EE - single) / single), printed next to the paper's rows.

Every network is the same backbone (ResNet-18 by default, AEP's ResNet50 being too slow here) trained from scratch
with the same data, epochs and seed by `edgeexit.pipeline.train_stage`; the single-exit network is the backbone with
its final classifier only. Each ensemble predicts argmax Σ β_i·O_i over its exits (Eq. 3, the mode's output
weights); pruning is `edgeexit.pipeline.prune_stage` (the best exit subset on validation). Latency is measured by
edgeexit's profiler (`edgeexit.profile.profile_bundle`, onnxruntime, batch 1, a fresh process, the unsplit model
timed twice as its null test) on the exported bundles: the single-exit network's time is the bundle's unsplit
reference model, an ensemble's the forced pass through every exit it keeps (all its heads run, as the ensemble
needs). Every full ensemble has the same architecture, so one is profiled for all; a pruned one per kept subset.

Reduced against the paper: 32 px Fashion-MNIST (the paper: 64 and 224 px), 10,000 training images, 3 epochs with
Adam 1e-3 cosine (the paper: 100 epochs, Adam 1e-4, early stopping), one backbone and one seed (the paper: averages
over 8 networks and 6 datasets). About 18 min on 2 idle cores (5 trainings ~2 min each, up to 6 exports and profiles).

    python tools/reproduce/aep.py --out runs/reproduce_aep

Writes OUT/aep.json and OUT/aep.md. `--quick`: a tiny CNN on synthetic data, seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_scale, apply_quick, load_outputs, md_table, print_table, scale_text, train_run, write  # noqa: E402

from edgeexit.aep import aep_weights  # noqa: E402
from edgeexit.calibrate import Budget  # noqa: E402
from edgeexit.models import ModelConfig  # noqa: E402
from edgeexit.pipeline import calibrate_stage, export_stage, prune_stage  # noqa: E402
from edgeexit.rundir import RunDir  # noqa: E402

MODES = ("desc", "asc", "mix", "unif")
# The paper's rows, quoted exactly. Table III has Fashion-MNIST rows (by dataset; averaged over the 8 networks);
# Tables IV-VII are averaged over networks AND datasets (no per-dataset rows). TR = trained from scratch, as here.
PAPER = {
    "source": "papers/000 (AEP), Tables III-VII",
    "table3_fmnist_accuracy_change_pct": {  # "AVERAGE PERCENTAGE CHANGE OF ACCURACY", row FMNIST
        "TRAIN-224": {"EEdesc": 0.628, "EEasc": 0.912, "EEmix": 0.942, "EEunif": 1.122,
                      "EEdesc*": 0.995, "EEasc*": 0.926, "EEmix*": 0.946, "EEunif*": 1.208},
        "TRAIN-64": {"EEdesc": 1.793, "EEasc": 1.071, "EEmix": 1.727, "EEunif": 1.772,
                     "EEdesc*": 1.804, "EEasc*": 1.062, "EEmix*": 1.736, "EEunif*": 1.734},
    },
    # pruned vs full ensemble, % change of accuracy ("EEase*" is the paper's spelling of EEasc*)
    "table4_pruned_vs_full_accuracy_pct": {"TR-224": {"EEdesc*": 1.006, "EEasc*": 0.009, "EEmix*": 0.050, "EEunif*": 0.260},
                                           "TR-64": {"EEdesc*": 0.435, "EEasc*": 0.142, "EEmix*": 0.625, "EEunif*": 0.193}},
    "table5_params_change_pct": {"TR-224": {"EE": 2.876, "EEdesc*": -0.566, "EEasc*": -10.422, "EEmix*": -16.508, "EEunif*": -1.773},
                                 "TR-64": {"EE": 2.876, "EEdesc*": -12.731, "EEasc*": -22.549, "EEmix*": -41.018, "EEunif*": -25.300}},
    "table6_macs_change_pct": {"TR-224": {"EE": 5.444, "EEdesc*": 1.816, "EEasc*": -1.908, "EEmix*": -5.438, "EEunif*": 2.118},
                               "TR-64": {"EE": 5.260, "EEdesc*": -3.302, "EEasc*": -8.549, "EEmix*": -17.952, "EEunif*": -9.078}},
    "table7_latency_change_pct": {"TR-224": {"EE": 5.795, "EEdesc*": 3.782, "EEasc*": 0.387, "EEmix*": -2.729, "EEunif*": 3.220},
                                  "TR-64": {"EE": 7.771, "EEdesc*": -0.776, "EEasc*": -6.061, "EEmix*": -16.325, "EEunif*": -7.482}},
}


def latency(run: RunDir, checkpoint: Path, tag: str, rounds: int) -> dict:
    """Export `checkpoint` for the cpu target and profile it (onnxruntime, batch 1): the forced pass through every
    exit against the unsplit reference model, with the profiler's null test."""
    from edgeexit.profile import profile_bundle

    # any thresholds do: only the forced pass and the reference are timed
    calibrate_stage(run, checkpoint, budget=Budget("macs_fraction", 1.0), curves=False)
    bundle = export_stage(run, checkpoint, run.root / f"bundle_{tag}", target="cpu", probes=False)
    prof = profile_bundle(bundle, backend="onnxruntime", batches=[1], rounds=rounds)
    full, forced = prof["full"]["p50_ms"], prof["exits"][-1]["p50_ms"]
    noise = prof["noise"][str(prof["batch_size"])]
    return {"unsplit_ms": full, "forced_ms": forced, "change": forced / full - 1, "null_test_noise": noise["noise"],
            "noise_bound": noise["bound"], "trusted": noise["trusted"], "bundle": str(bundle.root)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--exits", default="stages", help="where the ensembles' exits go (AEP: after every stage)")
    p.add_argument("--rounds", type=int, default=30, help="profiler rounds per bundle")
    p.add_argument("--no-latency", action="store_true", help="skip export and profiling")
    add_scale(p)
    args = apply_quick(p.parse_args(argv), backbone="tiny_cnn", rounds=3)
    modes = args.modes.split(",")
    if any(m not in MODES for m in modes):
        sys.exit(f"--modes takes some of {', '.join(MODES)}, got {args.modes}")
    t0 = time.time()

    base_run = train_run(args, "single", ModelConfig(backbone=args.backbone, exits=[], head="aep"), method="aep")
    base = load_outputs(base_run.checkpoint)
    single = {"test_accuracy": float(base.test.exit_accuracy[-1]),
              "params": float(sum(base.costs.segment_params) + base.costs.head_params[-1]),
              "macs": float(base.costs.full_macs)}
    if not args.no_latency:
        single["latency"] = latency(base_run, base_run.checkpoint, "single", args.rounds)

    rows, profiled = [], {}
    for mode in modes:
        run = train_run(args, f"ee-{mode}", ModelConfig(backbone=args.backbone, exits=args.exits, head="aep"),
                        method="aep", weight_mode=mode)
        t = load_outputs(run.checkpoint)
        beta = aep_weights(t.net.num_exits, mode, "output")
        full_acc = float((np.tensordot(beta, t.test.logits, 1).argmax(-1) == t.test.labels).mean())
        r = prune_stage(run, mode=mode)  # the best subset on validation, written to RUN/pruned.pt
        kept_acc = float((np.tensordot(np.asarray(r.weights), t.test.logits[r.kept_exits], 1).argmax(-1)
                          == t.test.labels).mean())
        row = {"mode": mode, "exit_names": list(t.net.exit_names), "test_exit_accuracy": t.test.exit_accuracy,
               "kept_exits": r.kept_exits, "ensemble_weights": r.weights,
               "full": {"test_accuracy": full_acc, "params": r.full["params"], "macs": r.full["macs"]},
               "pruned": {"test_accuracy": kept_acc, "params": r.params, "macs": r.macs}}
        if not args.no_latency:
            if "full" not in profiled:  # every full ensemble has the same architecture
                profiled["full"] = latency(run, run.checkpoint, "full", args.rounds)
            key = tuple(r.kept_exits)
            if key not in profiled:
                profiled[key] = latency(run, run.pruned, "pruned", args.rounds)
            row["full"]["latency"], row["pruned"]["latency"] = profiled["full"], profiled[key]
        for kind in ("full", "pruned"):
            f = row[kind]
            f["accuracy_change"] = f["test_accuracy"] / single["test_accuracy"] - 1
            f["params_change"] = f["params"] / single["params"] - 1
            f["macs_change"] = f["macs"] / single["macs"] - 1
        row["pruned_vs_full_accuracy_change"] = kept_acc / full_acc - 1
        rows.append(row)
    report = {"scale": scale_text(args), "backbone": args.backbone, "single": single, "ensembles": rows,
              "paper": PAPER, "seconds": time.time() - t0}
    print_and_write(report, args.out)
    return report


def print_and_write(report: dict, out: Path) -> None:
    single, tr64 = report["single"], PAPER["table3_fmnist_accuracy_change_pct"]["TRAIN-64"]
    header = ["config", "test acc", "Δacc % (ours)", "Δacc % (paper, FMNIST TRAIN-64, Tab. III)",
              "Δparams % (ours)", "Δparams % (paper TR-64, Tab. V)", "ΔMACs % (ours)", "ΔMACs % (paper TR-64, Tab. VI)",
              "Δlatency % (ours, ±null)", "Δlatency % (paper TR-64, Tab. VII)", "kept exits"]

    def lat(f: dict) -> str:
        lt = f.get("latency")
        if lt is None:
            return "not measured"
        return f"{100 * lt['change']:+.1f} ±{100 * lt['null_test_noise']:.1f}" + ("" if lt["trusted"] else " NOISY")

    rows = [["single exit", f"{100 * single['test_accuracy']:.2f}", "0", "0", "0", "0", "0", "0",
             (f"0 ({single['latency']['unsplit_ms']:.3f} ms)" if "latency" in single else "not measured"), "0", "final"]]
    for r in report["ensembles"]:
        name = "EE" + r["mode"]
        for kind, star in (("full", ""), ("pruned", "*")):
            f = r[kind]
            paper_other = "EE" if kind == "full" else name + "*"
            rows.append([name + star, f"{100 * f['test_accuracy']:.2f}", f"{100 * f['accuracy_change']:+.2f}",
                         f"{tr64[name + star]:+.3f}", f"{100 * f['params_change']:+.2f}",
                         f"{PAPER['table5_params_change_pct']['TR-64'][paper_other]:+.3f}",
                         f"{100 * f['macs_change']:+.2f}", f"{PAPER['table6_macs_change_pct']['TR-64'][paper_other]:+.3f}",
                         lat(f), f"{PAPER['table7_latency_change_pct']['TR-64'][paper_other]:+.3f}",
                         ", ".join(r["exit_names"][k] for k in (r["kept_exits"] if kind == "pruned" else range(len(r["exit_names"]))))])
    print_table(f"AEP on {report['backbone']}: change against the single-exit network (ours next to the paper's)",
                header, rows, caption=report["scale"], width=220)
    prune_rows = [[f"EE{r['mode']}*", f"{100 * r['pruned_vs_full_accuracy_change']:+.2f}",
                   f"{PAPER['table4_pruned_vs_full_accuracy_pct']['TR-64']['EE' + r['mode'] + '*']:+.3f}"]
                  for r in report["ensembles"]]
    text = (f"# AEP (papers/000) in miniature (`tools/reproduce/aep.py`)\n\nScale: {report['scale']}; backbone "
            f"{report['backbone']}.\n\nChanges are (EE - single) / single in %, as the paper's tables. The paper's "
            "figures: Table III's FMNIST row of TRAIN-64 (trained from scratch, 64 px, averaged over 8 networks); Tables "
            "V-VII have no per-dataset rows, their TR-64 rows are averages over networks and datasets (for the full "
            "ensembles the paper gives one EE column). Latency: edgeexit's profiler, onnxruntime, batch 1; ±null is "
            "the spread of the unsplit model timed twice (NOISY beyond the profiler's bound).\n\n"
            + md_table(header, rows) + "\n\nPruned against full ensemble (Table IV, % change of accuracy):\n\n"
            + md_table(["config", "ours", "paper TR-64 (Tab. IV)"], prune_rows))
    write(out, "aep", report, text)


if __name__ == "__main__":
    main()
