"""The batch-1 form of an ONNX bundle: every segment in one graph, each exit test an `If` node.

At batch 1 the exit loop's graph boundaries are most of its overhead on onnxruntime: a session call per segment, its
bindings, the test in Python. With ResNet-18 at 32 px they made the forced final exit 1.19x the unsplit model where
the heads alone are 0.04 of it. One graph that decides inside itself runs with one session call, so at batch 1 the
onnxruntime backend runs this graph and the segments serve every larger batch (see edgeexit.runtime.loop).

    inputs   x [1, C, H, W]        the sample
             thresholds [E - 1]    exit k's rule: leave when NOT (score < thresholds[k]); +inf: never leaves there
    outputs  logits [1, classes]   the answering exit's logits
             exit [1] int64        the answering exit; -(k + 1) when exit k's score was NaN (the runtime raises)

Exit k's segment runs, then `If(score_k < t_k)`: its then-branch holds segment k + 1 and the rest (nested), its
else-branch answers with exit k. The test is `score < t`, so a NaN score leaves (flagged) rather than running on;
`-inf` forces every sample out at k, which is how the profiler's `exit{k}` and `answer{k}` run it.

Each segment's weights stay inside the branch that runs it: onnxruntime pre-packs a subgraph's own initializers,
not those it reads from the outer graph (with the weights at the top the forced final exit took 2.6x the unsplit
model; inside their branch, 1.04x).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeexit.errors import ExportError

FUSED = "fused"  # onnx/fused.onnx; the manifest's `fused`
THRESHOLDS, EXIT = "thresholds", "exit"


def fusable(models) -> bool:
    """Whether these segments (loaded ONNX models, exit order) can be fused: two or more, each a plain graph (no local
    functions, no subgraphs: their names would have to be renamed inside too) with one input and the outputs the exit
    loop reads."""
    import onnx

    if len(models) < 2:
        return False
    for k, m in enumerate(models):
        want = {"logits"} if k == len(models) - 1 else {"features", "logits", "score"}
        if len(m.graph.input) != 1 or not want <= {o.name for o in m.graph.output}:
            return False
        if m.functions or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                              for n in m.graph.node for a in n.attribute):
            return False
    return True


def fuse_segments(paths: list[Path], out: Path, input_shape, num_classes: int) -> Path | None:
    """onnx/fused.onnx from the bundle's segment files `paths` (exit order), checked against them with onnxruntime;
    None, and nothing written, when they cannot be fused (`fusable`). Each file is read once."""
    import onnx
    from onnx import TensorProto, helper

    models = [onnx.load(str(p)) for p in paths]
    if not fusable(models):
        return None
    last = len(models) - 1
    parts = []  # per segment: (nodes, initializers, {output name: renamed})
    features = "x"
    for k, m in enumerate(models):
        g = m.graph
        inner = {g.input[0].name: features}  # segment k reads the previous segment's features

        def name(n: str, k=k, inner=inner) -> str:
            return inner.get(n, f"s{k}/{n}") if n else n

        for t in g.initializer:
            t.name = name(t.name)
        for i, node in enumerate(g.node):
            node.input[:] = [name(n) for n in node.input]
            node.output[:] = [name(n) for n in node.output]
            node.name = f"s{k}/{node.name or i}"  # unique in the whole model, unnamed nodes too
        outs = {o.name: name(o.name) for o in g.output}
        parts.append((list(g.node), list(g.initializer), outs))
        features = outs.get("features", "")

    def value(n: str, dtype=TensorProto.FLOAT):
        return helper.make_tensor_value_info(n, dtype, [1, num_classes] if dtype == TensorProto.FLOAT else [1])

    def const(n: str, v: int):
        return helper.make_node("Constant", [], [n], value=helper.make_tensor(n, TensorProto.INT64, [1], [v]))

    def answer(k: int):  # the branch that answers at exit k: its logits, its index (or -(k+1) for a NaN score)
        nodes, _, outs = parts[k]
        p = f"a{k}/"
        return helper.make_graph(
            [helper.make_node("Identity", [outs["logits"]], [p + "logits"]), const(p + "k", k), const(p + "nan", -k - 1),
             helper.make_node("IsNaN", [outs["score"]], [p + "bad"]),
             helper.make_node("Where", [p + "bad", p + "nan", p + "k"], [p + EXIT])],
            f"answer{k}", [], [value(p + "logits"), value(p + EXIT, TensorProto.INT64)])

    def from_segment(k: int, logits: str, exit_: str) -> list:
        """Segment k, then (not the last) its test and the If that runs the rest; outputs named logits, exit_."""
        nodes, _, outs = parts[k]
        if k == last:
            return [*nodes, helper.make_node("Identity", [outs["logits"]], [logits]), const(exit_, k)]
        p = f"t{k}/"
        go_on = helper.make_graph(from_segment(k + 1, p + "logits", p + EXIT), f"after{k}", [],
                                  [value(p + "logits"), value(p + EXIT, TensorProto.INT64)], initializer=parts[k + 1][1])
        return [*nodes, const(p + "k", k),
                helper.make_node("Gather", [THRESHOLDS, p + "k"], [p + "t"], axis=0),
                helper.make_node("Less", [outs["score"], p + "t"], [p + "on"]),
                helper.make_node("If", [p + "on"], [logits, exit_], name=f"test{k}", then_branch=go_on,
                                 else_branch=answer(k))]

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *input_shape])
    t = helper.make_tensor_value_info(THRESHOLDS, TensorProto.FLOAT, [last])
    graph = helper.make_graph(from_segment(0, "logits", EXIT), FUSED, [x, t],
                              [value("logits"), value(EXIT, TensorProto.INT64)], initializer=parts[0][1])
    model = helper.make_model(graph, opset_imports=models[0].opset_import, ir_version=models[0].ir_version,
                              producer_name="edgeexit")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ExportError("the fused batch-1 graph is not valid ONNX", got=str(err)[:300], expected="a valid graph",
                          hint="this is a bug in edgeexit's ONNX fusion: please report it with the model") from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    check_fused(out, paths, input_shape)
    return out


def check_fused(fused: Path, paths: list[Path], input_shape, *, seed: int = 0) -> None:
    """On one random sample: with no exit taken the fused graph gives the last segment's logits, and forced out at
    each exit k (threshold -inf) that exit's logits and index, as the segments chained by hand give them."""
    import onnxruntime as ort

    from edgeexit.ort_session import session_options

    def session(p: Path):
        return ort.InferenceSession(str(p), session_options(), providers=["CPUExecutionProvider"])

    x = np.random.default_rng(seed).standard_normal((1, *input_shape)).astype(np.float32)
    want, cur = [], x
    for p in paths:
        s = session(p)
        outs = dict(zip([o.name for o in s.get_outputs()], s.run(None, {s.get_inputs()[0].name: cur})))
        want.append(outs["logits"])
        cur = outs.get("features")
    fused_session = session(fused)
    last = len(paths) - 1
    for k in range(last + 1):
        rule = np.full(last, np.inf, np.float32)
        if k < last:
            rule[k] = -np.inf
        logits, exit_ = fused_session.run(None, {"x": x, THRESHOLDS: rule})
        err = float(np.max(np.abs(logits - want[k]) / (1 + np.abs(want[k]))))
        if int(exit_[0]) != k or err > 1e-5:
            raise ExportError(f"the fused batch-1 graph disagrees with the segments at exit {k}",
                              got=f"exit {int(exit_[0])}, max error {err:.1e}", expected=f"exit {k}, error <= 1e-5",
                              hint="this is a bug in edgeexit's ONNX fusion: please report it with the model")
