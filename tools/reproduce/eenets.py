"""EENets (papers/002) in miniature: accuracy against cost for several λ of the loss L_v2 = Σ_i CE(y, Ŷ_i) + λ·C_i
(Eq. 3 / L_v2), with the CIFAR-style ResNet-20 and 3 Pool-type early-exit blocks placed by the Pareto distribution
(the paper's EENet-20, Table 9) on Fashion-MNIST, next to a plain ResNet-20 (the single-exit network, trained the
same way) and the paper's own rows.

Each network is trained by `edgeexit.pipeline.train_stage` (`--method eenet`, the paper's Adam 1e-3, here cosine
annealed, batch 64), then answers every test image by the paper's rule: exit at the first block whose confidence
h >= T = 0.5 (`edgeexit.calibrate.policies.calibrate_fixed`, what the runtime does). Printed per λ: test accuracy,
the mean MACs as a fraction of the unsplit ResNet-20, and how many test images leave at each exit.

Reduced against the paper: Fashion-MNIST at 32 px (the paper: MNIST 28 px for the λ sweep of Table 3, CIFAR-10 for
Table 9), 10,000 training images, 3 epochs (the paper: the whole sets, 20 epochs for Table 3). About 7 min on 2 idle
cores (5 trainings of ResNet-20, ~75 s each).

    python tools/reproduce/eenets.py --out runs/reproduce_eenets

Writes OUT/eenets.json and OUT/eenets.md. `--quick`: a tiny CNN on synthetic data, seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_scale, apply_quick, load_outputs, md_table, print_table, scale_text, train_run, write  # noqa: E402

from edgeexit.calibrate.policies import calibrate_fixed  # noqa: E402
from edgeexit.models import ModelConfig  # noqa: E402

# The paper's rows, quoted exactly (papers/002).
PAPER = {
    "source": "papers/002 (EENets)",
    # Table 3: EENet-8 (4 filters) on MNIST, L_v2, Adam, 20 epochs; 10,000 test examples
    "table3_mnist_eenet8": {
        "columns": ["lambda", "accuracy", "time_us", "relative_cost", "exit_EEB-0", "exit_EEB-1", "exit_last"],
        "rows": [[0.50, 98.84, 638.0, 1.00, 0, 0, 10000], [0.70, 98.52, 711.6, 1.00, 0, 0, 10000],
                 [0.90, 97.46, 681.4, 0.78, 1120, 1498, 7382], [0.95, 97.48, 643.3, 0.74, 1230, 1883, 6887],
                 [1.00, 96.22, 615.0, 0.82, 359, 1879, 7762], [1.05, 97.53, 593.6, 0.85, 168, 1771, 8061],
                 [1.10, 98.34, 641.9, 0.85, 3, 1939, 8058], [1.15, 85.93, 557.8, 0.45, 48, 7245, 2707],
                 [1.30, 86.96, 487.3, 0.26, 0, 9996, 4], [1.50, 85.19, 476.4, 0.26, 0, 9997, 3]],
    },
    # Table 9: 6n+2 based EENets on CIFAR10, the EENet-20 rows (3 EE-blocks)
    "table9_cifar10_eenet20": {
        "columns": ["distribution", "accuracy", "cost_percent_of_ee_blocks", "relative_cost"],
        "rows": [["Fine", 75.74, "13,24,36", 0.36], ["Pareto", 83.59, "24, 36, 57", 0.56],
                 ["G.Ratio", 85.29, "24,45,68", 0.68], ["Linear", 83.92, "36,57,77", 0.56]],
    },
}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="cifar_resnet20")
    p.add_argument("--exits", default="eenet:pareto:3", help="the paper's EENet-20: 3 EE-blocks, Pareto")
    p.add_argument("--lams", default="0.5,1,1.5,2", help="λ of L_v2, comma-separated")
    p.add_argument("--threshold", type=float, default=0.5, help="the exit rule h >= T (the paper: 0.5)")
    add_scale(p)
    args = apply_quick(p.parse_args(argv), backbone="tiny_cnn", exits="eenet:pareto:2")
    lams = [float(v) for v in args.lams.split(",")]
    t0 = time.time()

    plain = load_outputs(train_run(args, "single", ModelConfig(backbone=args.backbone, exits=[], head="aep"),
                                   method="aep").checkpoint)
    single = {"test_accuracy": float(plain.test.exit_accuracy[-1]), "macs": float(plain.costs.full_macs)}
    rows = []
    for lam in lams:
        run = train_run(args, f"eenet-lam{lam:g}", ModelConfig(backbone=args.backbone, exits=args.exits, head="pool"),
                        method="eenet", lam=lam)
        t = load_outputs(run.checkpoint)
        rule = calibrate_fixed(t.test.logits, t.test.labels, t.costs.cumulative_macs, reference_cost=t.reference,
                               confidences=t.test.confidences, threshold=args.threshold)
        n = len(t.test.labels)
        rows.append({"lam": lam, "exit_names": list(t.net.exit_names), "test_exit_accuracy": t.test.exit_accuracy,
                     "exit_macs_fraction": [float(f) for f in t.costs.macs_fraction],
                     "test_accuracy": float(rule.accuracy), "macs_fraction": float(rule.cost_fraction),
                     "exit_counts": [int(round(f * n)) for f in rule.exit_fractions], "test_samples": n})
    report = {"scale": scale_text(args), "backbone": args.backbone, "exits": args.exits, "threshold": args.threshold,
              "single": single, "eenets": rows, "paper": PAPER, "seconds": time.time() - t0}
    print_and_write(report, args.out)
    return report


def print_and_write(report: dict, out: Path) -> None:
    single = report["single"]
    header = ["model", "λ", "test acc %", "Δ vs single (pt)", "relative cost (MACs)", "test images per exit"]
    rows = [[f"{report['backbone']} (single exit)", "", f"{100 * single['test_accuracy']:.2f}", "", "1.00", ""]]
    for r in report["eenets"]:
        rows.append([f"EENet ({report['exits']})", f"{r['lam']:g}", f"{100 * r['test_accuracy']:.2f}",
                     f"{100 * (r['test_accuracy'] - single['test_accuracy']):+.2f}", f"{r['macs_fraction']:.2f}",
                     " / ".join(str(c) for c in r["exit_counts"])])
    paper3 = [[f"{row[0]:.2f}", f"{row[1]:.2f}", f"{row[3]:.2f}", f"{row[4]} / {row[5]} / {row[6]}"]
              for row in PAPER["table3_mnist_eenet8"]["rows"]]
    paper9 = [[row[0], f"{row[1]:.2f}", row[2], f"{row[3]:.2f}"] for row in PAPER["table9_cifar10_eenet20"]["rows"]]
    print_table(f"EENets: accuracy vs cost per λ, exit rule h >= {report['threshold']}", header, rows,
                caption=report["scale"], width=160)
    print_table("the paper, Table 3 (EENet-8 on MNIST, 20 epochs, λ sweep)",
                ["λ", "accuracy %", "relative cost", "test examples per exit"], paper3, width=160)
    text = (f"# EENets (papers/002) in miniature (`tools/reproduce/eenets.py`)\n\nScale: {report['scale']}; backbone "
            f"{report['backbone']}, exits {report['exits']}, Pool-type EE-blocks, exit rule h >= {report['threshold']} "
            "on the test split. Relative cost: mean MACs / the unsplit network's (the paper: FLOPs).\n\n"
            + md_table(header, rows)
            + "\n\nThe paper, Table 3 (EENet-8, 4 filters, MNIST, L_v2, Adam, 20 epochs; 10,000 test examples):\n\n"
            + md_table(["λ", "accuracy %", "relative cost", "examples per exit (EEB-0 / EEB-1 / last)"], paper3)
            + "\n\nThe paper, Table 9 (6n+2 EENets on CIFAR10, EENet-20 with 3 EE-blocks):\n\n"
            + md_table(["distribution", "accuracy %", "cost percent of EE-blocks", "relative cost"], paper9))
    write(out, "eenets", report, text)


if __name__ == "__main__":
    main()
