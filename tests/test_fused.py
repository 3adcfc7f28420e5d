"""The batch-1 form of an ONNX bundle (edgeexit.export.fuse_onnx): one graph with an If node per exit test, which the
onnxruntime backend runs for a sample alone. It must answer exactly as the segment loop does, exit for exit, on real
onnxruntime: with the calibrated thresholds, with thresholds that spread samples over every exit, forced at each exit;
and flag a NaN score as the loop does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_bundle, runtime_for

from edgeexit.bundle import TensorSpec, digest, load_bundle
from edgeexit.bundle.manifest import Fused, SegmentRef
from edgeexit.errors import BundleError, ShapeError
from edgeexit.export.fuse_onnx import EXIT, THRESHOLDS, fuse_segments
from edgeexit.runtime import EarlyExitRuntime


@pytest.fixture(scope="module")
def opened(built):
    run, _ = built
    return EarlyExitRuntime.open(run / "bundle", "onnxruntime", threads=1)


def samples(rt: EarlyExitRuntime, n: int = 24) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, *rt.input_shape)).astype(np.float32)


def one_by_one(rt: EarlyExitRuntime, x: np.ndarray):
    """Every sample alone (the batch-1 form where the runtime has one): exits and logits."""
    runs = [rt.run(x[i:i + 1]) for i in range(len(x))]
    return np.concatenate([r.exit_index for r in runs]), np.concatenate([r.logits for r in runs])


def assert_same_answers(rt: EarlyExitRuntime, x: np.ndarray) -> np.ndarray:
    assert rt.fused
    exits, logits = one_by_one(rt, x)
    loop_exits, loop_logits = one_by_one(rt.segment_loop(), x)
    assert exits.tolist() == loop_exits.tolist()
    np.testing.assert_allclose(logits, loop_logits, rtol=1e-5, atol=1e-5)
    batched = rt.run(x)  # a batch runs the segment loop, whatever its size
    assert batched.exit_index.tolist() == exits.tolist()
    return exits


def test_a_cpu_bundle_ships_its_batch_one_form(built, opened):
    run, _ = built
    m = load_bundle(run / "bundle").manifest
    assert m.fused is not None and m.fused.segment["onnx"].file == "onnx/fused.onnx"
    assert [t.name for t in m.fused.inputs] == ["x", THRESHOLDS] and m.fused.inputs[1].shape == [len(m.exits) - 1]
    assert opened.fused and not opened.segment_loop().fused


def test_the_fused_graph_answers_as_the_segment_loop(opened):
    x = samples(opened)
    assert_same_answers(opened, x)  # the calibrated thresholds
    # thresholds between the samples' own scores, so that every exit answers some of them
    scores = [o["score"] for o in opened.exit_outputs(x)]
    spread = [float(np.quantile(s, 0.6)) for s in scores[:-1]] + [None]
    exits = assert_same_answers(opened.with_thresholds(spread), x)
    assert set(exits.tolist()) == set(range(opened.num_exits)), exits


def test_forced_and_answering_exits_run_through_it(opened):
    x = samples(opened, 4)
    for k in range(opened.num_exits):
        for rt in [opened.forced(k)] + ([opened.answering(k)] if k < opened.num_exits - 1 else []):
            exits, logits = one_by_one(rt, x)
            loop_exits, loop_logits = one_by_one(rt.segment_loop(), x)
            assert exits.tolist() == loop_exits.tolist() == [k] * len(x)
            np.testing.assert_allclose(logits, loop_logits, rtol=1e-5, atol=1e-5)


def test_the_trace_says_what_the_graph_ran(opened):
    x = samples(opened, 1)
    last = opened.num_exits - 1
    rt = opened.forced(last)
    rt.trace = []
    rt.run(x)
    assert rt.trace == [s for j in range(last) for s in (f"segment{j}", f"test{j}")] + [f"segment{last}"]
    rt = opened.answering(0)
    rt.trace = []
    rt.run(x)
    assert rt.trace == ["segment0", "test0"]


def test_a_one_exit_bundle_has_no_batch_one_form(tiny_net, tmp_path):
    """Nothing to fuse: a single segment is one call already (fuse_segments is never asked)."""
    from edgeexit.export.lower_onnx import batch_one_form

    rt = runtime_for(tiny_net, (1, 16, 16), tmp_path, [None] * 3)
    refs = {f"seg{k}": SegmentRef(file=f"onnx/seg{k}.onnx") for k in range(3)}
    assert batch_one_form(tmp_path, refs, ["seg0"], (1, 16, 16), 5) is None
    assert batch_one_form(tmp_path, refs, ["seg0", "seg1", "seg2"], (1, 16, 16), 5) is not None
    assert not rt.fused


def nan_score_segments(tmp: Path) -> list[Path]:
    """Two hand-made segments on x [N, 1, 2, 2]: exit 0's logits are x flattened, its score sqrt(sum x), NaN when
    the sum is negative; exit 1's logits are -x flattened."""
    import onnx
    from onnx import TensorProto, helper

    def save(name: str, nodes, outputs) -> Path:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 2, 2])
        path = tmp / f"{name}.onnx"
        onnx.save(helper.make_model(helper.make_graph(nodes, name, [x], outputs),
                                    opset_imports=[helper.make_opsetid("", 18)]), str(path))
        return path

    def out(name: str, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    def const(name: str, values):
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(values)],
                                                                                 values))

    flat = [const("shape", [-1, 4]), helper.make_node("Reshape", ["x", "shape"], ["flat"])]
    first = save("seg0", [helper.make_node("Identity", ["x"], ["features"]), *flat,
                          helper.make_node("Identity", ["flat"], ["logits"]), const("one", [1]),
                          helper.make_node("ReduceSum", ["flat", "one"], ["sum"], keepdims=0),
                          helper.make_node("Sqrt", ["sum"], ["score"])],
                 [out("features", [None, 1, 2, 2]), out("logits", [None, 4]), out("score", [None])])
    second = save("seg1", [*flat, helper.make_node("Neg", ["flat"], ["logits"])], [out("logits", [None, 4])])
    return [first, second]


def test_a_nan_score_is_an_error_as_in_the_loop(tmp_path):
    from edgeexit.runtime.ort import OrtBackend

    paths = nan_score_segments(tmp_path)
    shape = (1, 2, 2)
    fused = fuse_segments(paths, tmp_path / "fused.onnx", shape, 4)
    be = OrtBackend(threads=1)
    spec = lambda *names: [TensorSpec(name=n, shape=s) for n, s in names]  # noqa: E731
    segs = [be.open_segment(paths[0], None, spec(("x", [-1, *shape])),
                            spec(("features", [-1, *shape]), ("logits", [-1, 4]), ("score", [-1])), 8),
            be.open_segment(paths[1], None, spec(("x", [-1, *shape])), spec(("logits", [-1, 4])), 8)]
    inputs, outputs = Fused.io(shape, 2, 4)
    one = be.open_segment(fused, None, inputs, outputs, 1)
    rt = EarlyExitRuntime(be, segs, [1.0, None], [1, 2], shape, 4, 8, fused=one)
    ok = np.array([1, 2, 3, 4], np.float32).reshape(1, *shape)  # score sqrt(10) >= 1: answers at exit 0
    low = np.array([0.1, 0.1, 0.1, 0.2], np.float32).reshape(1, *shape)  # sqrt(0.5) < 1: runs on to exit 1
    for x, k in ((ok, 0), (low, 1)):
        assert rt.run(x).exit_index.tolist() == rt.segment_loop().run(x).exit_index.tolist() == [k]
    np.testing.assert_array_equal(rt.run(low).logits, -low.reshape(1, 4))
    raw = one.run({"x": -ok, THRESHOLDS: np.array([1.0], np.float32)})
    assert int(raw[EXIT][0]) == -1  # the graph flags exit 0's NaN score (sqrt of -10)
    for r in (rt, rt.segment_loop()):
        with pytest.raises(ShapeError, match="exit 0"):
            r.run(-ok)


@pytest.mark.parametrize("edit, says", [
    (lambda m: m["fused"]["inputs"][1].update(shape=[7]), "fused: inputs/outputs"),
    (lambda m: m["fused"]["outputs"][1].update(dtype="float32"), "fused: inputs/outputs"),
    (lambda m: m["fused"]["segment"]["onnx"].update(file=m["exits"][0]["segment"]["onnx"]["file"]),
     "another program's file"),
    (lambda m: m["fused"]["segment"]["onnx"].update(file="calibration.json"), "not a .onnx file"),
])
def test_a_forged_batch_one_form_is_refused(built, tmp_path, edit, says):
    """The runner binds the fused graph's thresholds from the exit count, so its I/O is checked against the manifest
    before any file is opened; and it is a file of its own, of its format."""
    b = copy_bundle(built, tmp_path)
    raw = json.loads((b / "manifest.json").read_text())
    edit(raw)
    raw["checksum"] = digest(raw)
    (b / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=says):
        load_bundle(b)
