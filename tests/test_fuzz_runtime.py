"""Fuzzing the exit loop with hypothesis, on the real runtimes (issue 16, item 6).

Random batch sizes (1..the largest, and past it), thresholds (equal to a sample's own score, +0 / -0, subnormals,
±inf, None), score kinds, exit counts (tiny models with 1..4 exits) and input values (scales from 1e-30 to 1e30,
subnormals, signed zeros) through onnxruntime and torch `.pt2`, and through ExecuTorch's Python runtime on the
android bundle (which holds .pte, .onnx and .pt2). Every example asserts: no crash, no exception but an
EdgeExitError (a ShapeError for inputs that are not finite, or that overflow inside the network), well-formed
outputs, batch-N equal to per-sample, each backend's exits equal to the rule applied to its own scores, and the
same exit decisions across backends wherever no score sits within float noise of its threshold. Random byte flips
of vectors.npz go through its loader: arrays as the manifest says, or a BundleError.

Examples are derandomised (the same ones every run) and bounded; the counts per property are printed at the end
(`pytest -s`) and must reach a floor, so a property that silently stopped running fails.
"""

from __future__ import annotations

import importlib
import io
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeexit.compare import VECTORS, load_vectors
from edgeexit.errors import BundleError, EdgeExitError, ShapeError
from edgeexit.export import LOWERINGS, split_programs
from edgeexit.models import ModelConfig, build_model
from edgeexit.models.costs import count_costs
from edgeexit.models.scores import score_fn_torch
from edgeexit.runtime import EarlyExitRuntime, make_backend

SHAPE = (1, 16, 16)
CLASSES = 5
MAX_BATCH = 6
# (exits after these blocks, score kind): 1..4 exits, the three logit scores (the branch scores, confidence and
# gater, need a trained branch: the EENet and gater tests cover them)
NETS = {1: ("tiny_cnn", [2], "max_softmax"), 2: ("tiny_cnn", [0, 2], "neg_entropy"),
        3: ("tiny_cnn", [0, 1, 2], "margin"), 4: ("cifar_resnet20", [2, 5, 7, 9], "max_softmax")}
HOST_BACKENDS = ("onnxruntime", "torch")
EXAMPLES = {"loop": 40, "non_finite": 25, "android": 20, "vectors": 150}
COUNTS: dict[str, int] = {k: 0 for k in EXAMPLES}
FUZZ = settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
NEAR = 1e-5  # two backends' scores differ by float rounding: a threshold this close may fall either way


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print("\nhypothesis examples per property: " + ", ".join(f"{k} {v}" for k, v in COUNTS.items()))


@pytest.fixture(scope="module")
def nets(tmp_path_factory) -> dict[int, dict[str, EarlyExitRuntime]]:
    """Per exit count, the same tiny model on every host backend (max batch MAX_BATCH): split once, lowered for each."""
    out = {}
    for n_exits, (bb, exits, kind) in NETS.items():
        torch.manual_seed(n_exits)
        net = build_model(ModelConfig(backbone=bb, in_channels=1, image_size=16, num_classes=CLASSES,
                                      exits=exits)).eval()
        programs, _ = split_programs(net, score_fn_torch(kind), SHAPE, max_batch=MAX_BATCH)
        costs = count_costs(net, SHAPE[0], SHAPE[1]).cumulative_macs
        out[n_exits] = {}
        for name in HOST_BACKENDS:
            be = make_backend(name, threads=1)
            where = tmp_path_factory.mktemp(f"fuzz{n_exits}{name}")
            refs = importlib.import_module(LOWERINGS[be.format]).lower_programs(programs, where)
            segments = [be.open_segment(where / refs[p.name].file, refs[p.name], p.inputs, p.outputs, MAX_BATCH)
                        for p in programs]
            out[n_exits][name] = EarlyExitRuntime(be, segments, [None] * n_exits, costs, SHAPE, CLASSES, MAX_BATCH)
        assert out[n_exits]["onnxruntime"].num_exits == n_exits
    return out


# --- strategies ------------------------------------------------------------------------------------------------------

@st.composite
def inputs(draw, n: int, shape=SHAPE) -> np.ndarray:
    """A float32 batch: seeded normal values at a drawn scale, some entries set to special finite values."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1.0, 1e-30, 1e-3, 10.0, 1e3, 1e30]))
    x = (rng.standard_normal((n, *shape)) * scale).astype(np.float32)
    specials = draw(st.lists(st.sampled_from([0.0, -0.0, 1e-45, -1e-45, 1e-40, -1e-38, 1.0, -1.0]), max_size=6))
    flat = x.reshape(-1)
    for v in specials:
        flat[rng.integers(flat.size)] = np.float32(v)
    return x


@st.composite
def thresholds(draw, scores: list[np.ndarray]) -> list[float | None]:
    """One rule per exit: None, ±inf, ±0, a subnormal, a number in [-1, 1], or one of the batch's own scores there
    (the tie: score >= threshold must exit)."""
    out: list[float | None] = []
    for s in scores:
        kind = draw(st.sampled_from(["none", "score", "score", "zero", "subnormal", "uniform", "inf"]))
        if kind == "none":
            out.append(None)
        elif kind == "score":
            out.append(float(s[draw(st.integers(0, len(s) - 1))]))
        elif kind == "zero":
            out.append(draw(st.sampled_from([0.0, -0.0])))
        elif kind == "subnormal":
            out.append(draw(st.sampled_from([1e-45, -1e-45, 1e-40, 5e-324, -5e-324, 1e-310])))
        elif kind == "inf":
            out.append(draw(st.sampled_from([math.inf, -math.inf])))
        else:
            out.append(draw(st.floats(-1.0, 1.0, allow_nan=False, allow_subnormal=True)))
    return out


# --- what every result must be ---------------------------------------------------------------------------------------

def rule_exits(scores: list[np.ndarray], rt: EarlyExitRuntime) -> np.ndarray:
    """The exit rule applied to a backend's own float32 scores: the first exit k with score >= threshold."""
    n = len(scores[0])
    out = np.full(n, rt.num_exits - 1, np.int64)
    open_ = np.ones(n, bool)
    for k, t in enumerate(rt.thresholds[:-1]):
        if t is None:
            continue
        hit = open_ & (scores[k] >= np.float32(t))
        out[hit] = k
        open_ &= ~hit
    return out


def near_threshold(scores: list[np.ndarray], rt: EarlyExitRuntime) -> np.ndarray:
    """Samples with some score within float noise of its exit's threshold (a decision that rounding may flip)."""
    near = np.zeros(len(scores[0]), bool)
    for k, t in enumerate(rt.thresholds[:-1]):
        if t is not None and math.isfinite(t):
            near |= np.abs(scores[k].astype(np.float64) - t) <= NEAR * max(1.0, abs(t))
    return near


def assert_rows_close(got: np.ndarray, want: np.ndarray) -> None:
    """Logits of the same samples computed at another batch size: equal up to float32 rounding, which grows with the
    size of the values a row is computed from (1e-5 of the row's largest logit, at least 1e-5): a kernel that
    accumulates in another order for another batch size moves a logit of 0.63 in a row reaching 332 by 5e-5."""
    got, want = np.atleast_2d(got), np.atleast_2d(want)
    scale = np.maximum(1.0, np.abs(want).max(axis=-1, keepdims=True))
    assert (np.abs(got - want) <= 1e-5 * scale + 1e-5 * np.abs(want)).all(), (got, want)


def check_result(rt: EarlyExitRuntime, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run x whole and sample by sample: well-formed, equal, and what the rule says on this backend's own scores.
    Returns (exit index, scores as a list per exit)."""
    res = rt.run(x)
    n = len(x)
    assert res.predictions.shape == (n,) and res.exit_index.shape == (n,) and res.macs.shape == (n,)
    assert res.logits.shape == (n, rt.num_classes) and res.logits.dtype == np.float32
    assert np.isfinite(res.logits).all()
    assert ((0 <= res.exit_index) & (res.exit_index < rt.num_exits)).all()
    assert ((0 <= res.predictions) & (res.predictions < rt.num_classes)).all()
    np.testing.assert_array_equal(res.predictions, res.logits.argmax(1))
    np.testing.assert_array_equal(res.macs, rt.cumulative_macs[res.exit_index])
    singles = [rt.run(x[i:i + 1]) for i in range(n)]
    np.testing.assert_array_equal(np.concatenate([s.exit_index for s in singles]), res.exit_index)
    np.testing.assert_array_equal(np.concatenate([s.predictions for s in singles]), res.predictions)
    assert_rows_close(np.concatenate([s.logits for s in singles]), res.logits)
    outs = rt.exit_outputs(x)
    scores = [o["score"] for o in outs]
    np.testing.assert_array_equal(res.exit_index, rule_exits(scores, rt))
    for i, k in enumerate(res.exit_index):  # an exiting sample carries its exit's logits
        assert_rows_close(res.logits[i], outs[k]["logits"][i])
    return res.exit_index, scores


def run_or_overflow(rt: EarlyExitRuntime, x: np.ndarray):
    """check_result, or the ShapeError of an input whose float32 arithmetic overflows inside the network."""
    try:
        return check_result(rt, x)
    except ShapeError as err:
        assert "non-finite" in str(err) and "sample" in str(err), err
        return None


# --- properties ------------------------------------------------------------------------------------------------------

@settings(FUZZ, max_examples=EXAMPLES["loop"])
@given(data=st.data())
def test_exit_loop_fuzz_on_host_backends(nets, data):
    n_exits = data.draw(st.integers(1, 4), label="exits")
    n = data.draw(st.integers(1, MAX_BATCH + 3), label="batch")  # past the largest: run in chunks
    x = data.draw(inputs(n), label="inputs")
    base = nets[n_exits]["onnxruntime"]
    probe = run_or_overflow(base.with_thresholds([None] * n_exits), x)
    if probe is None:
        COUNTS["loop"] += 1
        return
    t = data.draw(thresholds(probe[1]), label="thresholds")
    got = {}
    for name in HOST_BACKENDS:
        rt = nets[n_exits][name].with_thresholds(t)
        got[name] = run_or_overflow(rt, x)
    if all(g is not None for g in got.values()):
        (a, sa), (b, sb) = got["onnxruntime"], got["torch"]
        sure = ~(near_threshold(sa, base.with_thresholds(t)) | near_threshold(sb, base.with_thresholds(t)))
        np.testing.assert_array_equal(a[sure], b[sure])
    COUNTS["loop"] += 1


@settings(FUZZ, max_examples=EXAMPLES["non_finite"])
@given(data=st.data())
def test_non_finite_and_huge_inputs_are_shape_errors(nets, data):
    n_exits = data.draw(st.integers(1, 4), label="exits")
    name = data.draw(st.sampled_from(HOST_BACKENDS), label="backend")
    n = data.draw(st.integers(1, MAX_BATCH + 2), label="batch")
    x = data.draw(inputs(n), label="inputs")
    bad = data.draw(st.sampled_from([math.nan, math.inf, -math.inf, 3e38, -3e38, 1e38]), label="value")
    row = data.draw(st.integers(0, n - 1), label="row")
    x[row].reshape(-1)[data.draw(st.integers(0, x[0].size - 1))] = np.float32(bad)
    if abs(bad) >= 1e38:
        x[row] = np.float32(bad)  # the whole image: float32 sums inside the first conv overflow
    rt = nets[n_exits][name].with_thresholds(data.draw(thresholds([np.zeros(1, np.float32)] * n_exits)))
    try:
        res = rt.run(x)
    except EdgeExitError as err:
        assert isinstance(err, ShapeError), err
        msg = str(err)
        if not math.isfinite(bad):
            assert "input holds NaN or inf" in msg
        else:  # names the exit and the poisoned sample
            assert f"sample {row}" in msg and "non-finite" in msg and "exit " in msg
    else:
        assert math.isfinite(bad) and np.isfinite(res.logits).all()
    COUNTS["non_finite"] += 1


@pytest.fixture(scope="module")
def android_runtimes(android_bundle):
    """The android bundle on every backend that runs one of its formats here: ExecuTorch, onnxruntime, torch."""
    rts = {name: EarlyExitRuntime.open(android_bundle, name, threads=1) for name in ("executorch", "onnxruntime", "torch")}
    yield rts
    for rt in rts.values():
        rt.close()


@settings(FUZZ, max_examples=EXAMPLES["android"])
@given(data=st.data())
def test_android_bundle_fuzz_on_executorch_and_host_backends(android_runtimes, data):
    ref = android_runtimes["executorch"]
    shape = ref.input_shape
    n = data.draw(st.integers(1, min(ref.max_batch, 5)), label="batch")
    x = data.draw(inputs(n, shape), label="inputs")
    probe = run_or_overflow(ref.with_thresholds([None] * ref.num_exits), x)
    if probe is None:
        COUNTS["android"] += 1
        return
    t = data.draw(thresholds(probe[1]), label="thresholds")
    got = {name: run_or_overflow(rt.with_thresholds(t), x) for name, rt in android_runtimes.items()}
    if all(g is not None for g in got.values()):
        sure = np.ones(n, bool)
        for _, s in got.values():
            sure &= ~near_threshold(s, ref.with_thresholds(t))
        for name, (exits, _) in got.items():
            np.testing.assert_array_equal(exits[sure], got["executorch"][0][sure], err_msg=name)
    COUNTS["android"] += 1


@pytest.fixture(scope="module")
def vectors_file(android_bundle) -> tuple[Path, tuple, int, int]:
    import json

    manifest = json.loads((android_bundle / "manifest.json").read_text())
    return (android_bundle / VECTORS, tuple(manifest["input"]["shape"]), len(manifest["class_names"]),
            len(manifest["exits"]))


def _rezip(data: bytes, member: str, payload: bytes) -> bytes:
    """The .npz `data` with one member's bytes replaced, CRCs recomputed (what a forger re-sealing would write)."""
    src, buf = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for name in src.namelist():
            out.writestr(name, payload if name == member else src.read(name))
    return buf.getvalue()


@settings(FUZZ, max_examples=EXAMPLES["vectors"])
@given(data=st.data())
def test_vectors_byte_flips_are_arrays_or_a_bundle_error(vectors_file, tmp_path_factory, data):
    source, shape, classes, exits = vectors_file
    raw = source.read_bytes()
    member = data.draw(st.sampled_from([None, "inputs.npy", "exit0_logits.npy", "exit0_score.npy"]), label="member")
    target = bytearray(raw if member is None else zipfile.ZipFile(io.BytesIO(raw)).read(member))
    header_bias = data.draw(st.booleans(), label="in the header")  # most damage that matters is in the first bytes
    for _ in range(data.draw(st.integers(1, 8), label="flips")):
        i = data.draw(st.integers(0, min(len(target), 160 if header_bias else len(target)) - 1))
        target[i] ^= 1 << data.draw(st.integers(0, 7))
    blob = bytes(target) if member is None else _rezip(raw, member, bytes(target))
    path = tmp_path_factory.mktemp("flip") / VECTORS
    path.write_bytes(blob)
    try:
        got = load_vectors(path, shape, classes, exits)
    except BundleError as err:
        assert "vectors.npz" in str(err) and "hint" in str(err)
    else:
        n = len(got["inputs"])
        assert got["inputs"].shape == (n, *shape) and got["inputs"].dtype == np.float32
        for k in range(exits):
            assert got[f"exit{k}_logits"].shape == (n, classes) and got[f"exit{k}_score"].shape == (n,)
        assert all(np.isfinite(a).all() for a in got.values())
    COUNTS["vectors"] += 1


def test_every_property_ran_its_examples():
    """Run last (file order): each property above ran at least half its examples (none was skipped or cut short)."""
    for name, want in EXAMPLES.items():
        assert COUNTS[name] >= want // 2, (name, COUNTS[name], want)
