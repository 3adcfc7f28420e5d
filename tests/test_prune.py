"""AEP weights and the exhaustive exit-subset pruning (papers/000, Section III)."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest

from edgeexit.aep import AEP_MODES, aep_weights
from edgeexit.errors import BudgetError, ConfigError, DatasetError, ShapeError
from edgeexit.prune import prune

ASC = {1: [1.0], 2: [1 / 3, 2 / 3], 3: [1 / 6, 2 / 6, 3 / 6], 4: [0.1, 0.2, 0.3, 0.4]}


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_aep_weights_by_hand(n):
    asc, desc, unif = ASC[n], ASC[n][::-1], [1 / n] * n
    expected = {  # papers/000 Table I: (loss, output)
        "desc": (desc, desc),
        "asc": (asc, asc),
        "mix": (desc, asc),
        "unif": (unif, unif),
    }
    for mode, (loss, output) in expected.items():
        np.testing.assert_allclose(aep_weights(n, mode, "loss"), loss, rtol=1e-12)
        np.testing.assert_allclose(aep_weights(n, mode, "output"), output, rtol=1e-12)
        np.testing.assert_allclose(aep_weights(n, mode.upper(), "output"), output, rtol=1e-12)


@pytest.mark.parametrize("mode", AEP_MODES)
@pytest.mark.parametrize("role", ["loss", "output"])
def test_aep_weights_are_positive_and_sum_to_one(mode, role):
    for n in range(1, 12):
        w = aep_weights(n, mode, role)
        assert w.shape == (n,) and (w > 0).all() and w.sum() == pytest.approx(1.0)


def test_aep_weight_errors():
    for args in [(0, "asc", "loss"), (2.0, "asc", "loss"), (2, "ascending", "loss"), (2, "asc", "input")]:
        with pytest.raises(ConfigError):
            aep_weights(*args)


def reference(logits, labels, mode):
    """Every subset's accuracy, one subset and one sample-block at a time (the slow, obvious way)."""
    n_exits = logits.shape[0]
    out = {}
    for size in range(1, n_exits + 1):
        for subset in itertools.combinations(range(n_exits), size):
            beta = aep_weights(size, mode, "output")
            ensemble = sum(b * logits[i].astype(np.float64) for b, i in zip(beta, subset))
            out[subset] = float((ensemble.argmax(-1) == labels).mean())
    return out


COST_ARGS = dict(segment_params=[10.0, 20.0, 30.0], head_params=[1.0, 2.0, 3.0],
                 segment_macs=[100.0, 200.0, 300.0], head_macs=[1.0, 1.0, 1.0])


def complementary(first: int, second: int, n: int = 40, n_classes: int = 3):
    """3-exit logits where exits `first` and `second` are each right on half the samples (a different
    half, by a margin of 3 to 1) and so together right on all; the other exit's logits stay zero."""
    labels = np.arange(n) % n_classes
    wrong = (labels + 1) % n_classes
    half = np.arange(n) < n // 2
    rows = np.arange(n)
    logits = np.zeros((3, n, n_classes), dtype=np.float32)
    logits[first, rows, np.where(half, labels, wrong)] = np.where(half, 3.0, 1.0)
    logits[second, rows, np.where(half, wrong, labels)] = np.where(half, 1.0, 3.0)
    return logits, labels


@pytest.mark.parametrize("mode", AEP_MODES)
def test_designed_best_subset_skips_the_bad_exit(mode):
    """Exits 0 and 2 complement each other; exit 1 is always confidently wrong."""
    logits, labels = complementary(0, 2)
    logits[1, np.arange(len(labels)), (labels + 2) % 3] = 10.0
    result = prune(logits, labels, mode=mode, **COST_ARGS)
    assert result.kept_exits == [0, 2]
    assert result.accuracy == 1.0
    assert result.params == 10 + 20 + 30 + 1 + 3 and result.macs == 100 + 200 + 300 + 1 + 1
    assert result.full["exits"] == [0, 1, 2] and result.full["accuracy"] == 0.0
    by_exits = {tuple(row["exits"]): row["accuracy"] for row in result.subsets}
    assert by_exits[(0,)] == by_exits[(2,)] == 0.5
    np.testing.assert_allclose(result.weights, aep_weights(2, mode, "output"))


def test_ties_go_to_fewer_macs_then_fewer_exits():
    n, n_classes = 30, 4
    labels = np.arange(n) % n_classes
    logits = np.zeros((3, n, n_classes), dtype=np.float32)
    logits[0, np.arange(n), (labels + 1) % n_classes] = 0.1  # exit 0: wrong, but barely
    logits[1, np.arange(n), labels] = 5.0
    logits[2, np.arange(n), labels] = 5.0
    zero_heads = dict(COST_ARGS, head_macs=[0.0, 0.0, 0.0])
    result = prune(logits, labels, mode="unif", **zero_heads)
    # {1}, {0,1}, {1,2}, {0,1,2}, {2}, {0,2} are all right; {1} and {0,1} cost the least MACs; {1} has fewer exits
    assert result.kept_exits == [1]
    result = prune(logits, labels, mode="unif", **dict(zero_heads, head_macs=[0.0, 5.0, 0.0],
                                                       segment_macs=[100.0, 0.0, 0.0]))
    assert result.kept_exits == [2]  # exit 2's segment is free and its head cheaper than exit 1's


def test_fewer_macs_beat_fewer_exits():
    """Exits 0 and 1 complement each other; exit 2 alone is right on all, at more MACs."""
    logits, labels = complementary(0, 1)
    logits[2, np.arange(len(labels)), labels] = 3.0
    result = prune(logits, labels, mode="unif", **COST_ARGS)
    assert result.accuracy == 1.0
    assert result.kept_exits == [0, 1]  # 302 MACs with two exits against 601 with one
    free_tail = dict(COST_ARGS, segment_macs=[100.0, 200.0, 0.0], head_macs=[0.0, 0.0, 0.0])
    result = prune(logits, labels, mode="unif", **free_tail)
    assert result.kept_exits == [2]  # now both cost 300 MACs: the single exit wins


@pytest.mark.parametrize("mode", AEP_MODES)
def test_vectorised_search_matches_the_reference(mode):
    rng = np.random.default_rng(0)
    n_exits, n, n_classes = 4, 300, 5
    labels = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n_exits, n, n_classes)).astype(np.float32)
    logits[:, np.arange(n), labels] += rng.uniform(0, 1.5, size=(n_exits, 1))
    costs = dict(segment_params=np.ones(n_exits), head_params=np.ones(n_exits),
                 segment_macs=np.arange(1.0, n_exits + 1), head_macs=np.full(n_exits, 0.5))
    expected = reference(logits, labels, mode)
    # the default chunking, row chunks, and chunks of a few samples must all agree
    for chunk in (32 << 20, n * n_classes * 4 * 3, 64):
        result = prune(logits, labels, mode=mode, max_chunk_bytes=chunk, **costs)
        got = {tuple(row["exits"]): row["accuracy"] for row in result.subsets}
        assert got == pytest.approx(expected)
        assert result.accuracy == max(expected.values())
        assert len(result.subsets) == 2 ** n_exits - 1


def test_all_127_subsets_of_10000_samples_take_well_under_a_second():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(7, 10000, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 10000)
    costs = dict(segment_params=np.ones(7), head_params=np.ones(7), segment_macs=np.ones(7), head_macs=np.ones(7))
    prune(logits[:, :100], labels[:100], mode="mix", **costs)  # warm-up
    start = time.perf_counter()
    result = prune(logits, labels, mode="mix", **costs)
    assert time.perf_counter() - start < 1.0
    assert len(result.subsets) == 127


def test_result_to_dict_is_json_and_compares_to_the_full_network():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 50, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 50)
    result = prune(logits, labels, mode="desc", **COST_ARGS)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["kept_exits"] == result.kept_exits
    assert data["vs_full"]["accuracy_change"] == pytest.approx(result.accuracy - result.full["accuracy"])
    assert data["vs_full"]["macs_ratio"] == pytest.approx(result.macs / result.full["macs"])
    assert data["vs_full"]["exits_removed"] == [e for e in range(3) if e not in result.kept_exits]


def test_prune_input_errors():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3, 20, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 20)
    with pytest.raises(DatasetError, match="empty"):
        prune(logits[:, :0], labels[:0], mode="asc", **COST_ARGS)
    bad = logits.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ShapeError, match="NaN"):
        prune(bad, labels, mode="asc", **COST_ARGS)
    with pytest.raises(ShapeError, match="segment_params"):
        prune(logits, labels, mode="asc", **dict(COST_ARGS, segment_params=[1.0, 2.0]))
    with pytest.raises(ShapeError, match="head_macs"):
        prune(logits, labels, mode="asc", **dict(COST_ARGS, head_macs=[1.0, -1.0, 1.0]))
    with pytest.raises(ConfigError, match="unknown AEP weight mode"):
        prune(logits, labels, mode="best", **COST_ARGS)
    with pytest.raises(ShapeError, match="labels"):
        prune(logits, labels[:5], mode="asc", **COST_ARGS)


def test_budget_objective_keeps_the_cheap_exit_the_ensemble_rule_drops():
    """AEP's rule keeps the best ensemble ({1}: always right, cheaper than {2}); under a budget of 1.5 MACs only
    subsets starting at exit 0 are feasible, and {0, 1} is the one that stays fully accurate (cost 1.4)."""
    from edgeexit.prune import prune_for_budget

    n, c = 100, 4
    rng = np.random.default_rng(0)
    labels = rng.integers(0, c, n)
    onehot = np.eye(c, dtype=np.float32)[labels]
    logits = np.stack([onehot * 8.0, onehot * 8.0, onehot * 8.0])
    wrong = np.arange(n) >= 60  # exit 0 is right and confident on the first 60 samples only
    logits[0, wrong] = np.eye(c, dtype=np.float32)[(labels[wrong] + 1) % c] * 0.5
    sizes = dict(segment_params=[1, 1, 1], head_params=[0, 0, 0], segment_macs=[1, 1, 2], head_macs=[0, 0, 0])
    assert prune(logits, labels, mode="unif", **sizes).kept_exits == [1]
    r = prune_for_budget(logits, labels, mode="unif", budget_macs=1.5, reference_macs=3.0, **sizes)
    assert r.kept_exits == [0, 1] and r.accuracy == 1.0 and r.objective == "budget"
    by_exits = {tuple(row["exits"]): row for row in r.subsets}
    assert by_exits[(1,)]["accuracy"] is None and by_exits[(1, 2)]["accuracy"] is None  # cannot meet 1.5
    assert by_exits[(0, 1)]["expected_macs"] == pytest.approx(1.4)
    with pytest.raises(BudgetError, match="no exit subset"):
        prune_for_budget(logits, labels, mode="unif", budget_macs=0.5, reference_macs=3.0, **sizes)


def test_pruned_checkpoint_keeps_no_weights_and_rebuilds_the_sub_network(built, tmp_path):
    """pruned.pt names the kept exits and takes every weight from checkpoint.pt beside it (sha256 checked): no second
    copy of the weights, the optimizer or the generator (issue 21: 224 MB for ResNet-18); the network it gives is the
    trained one cut at the kept exits."""
    import shutil

    import torch
    from typer.testing import CliRunner

    from edgeexit.cli import app
    from edgeexit.errors import CheckpointError
    from edgeexit.rundir import RunDir, StaleArtifactError
    from edgeexit.train.checkpoint import load_checkpoint, model_from_checkpoint
    from tests.conftest import copy_run

    run = copy_run(built, tmp_path / "run")
    res = CliRunner().invoke(app, ["prune", "--run-dir", str(run), "--budget", "0.5"])
    assert res.exit_code == 0, res.output
    raw = torch.load(run / "pruned.pt", weights_only=True)
    assert raw["state_dict"] == {} and raw["weights_from"] == "checkpoint.pt"
    assert not any(isinstance(v, (torch.Tensor, dict)) and k.endswith(("state_dict", "optimizer", "generator", "scaler"))
                   and v for k, v in raw.items())
    assert (run / "pruned.pt").stat().st_size < (run / "checkpoint.pt").stat().st_size / 4

    kept = raw["kept_exits"]
    full, _ = model_from_checkpoint(load_checkpoint(run / "checkpoint.pt"))
    sub, _ = model_from_checkpoint(load_checkpoint(RunDir(run).trained()))
    assert sub.num_exits == len(kept)
    spec = load_checkpoint(run / "checkpoint.pt")["input_spec"]
    x = torch.randn(4, spec["channels"], spec["height"], spec["width"])
    with torch.no_grad():
        want, got = full.select_exits(kept)(x), sub(x)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    unpruned, _ = model_from_checkpoint(load_checkpoint(run / "pruned.pt"), unpruned=True)
    assert unpruned.num_exits == full.num_exits

    moved = tmp_path / "moved"  # pruned.pt alone: its weights are missing, said so
    moved.mkdir()
    shutil.copy(run / "pruned.pt", moved / "pruned.pt")
    with pytest.raises(CheckpointError, match="checkpoint.pt beside it, which is missing"):
        load_checkpoint(moved / "pruned.pt")
    other = tmp_path / "other"  # beside another training's checkpoint: refused as stale
    other.mkdir()
    shutil.copy(run / "pruned.pt", other / "pruned.pt")
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["epoch"] = ckpt["epoch"] + 1
    torch.save(ckpt, other / "checkpoint.pt")
    with pytest.raises(StaleArtifactError, match="cut from another training"):
        load_checkpoint(other / "pruned.pt")
