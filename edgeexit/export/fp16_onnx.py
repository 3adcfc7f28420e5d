"""An ONNX graph rewritten to fp16 weights and arithmetic, float32 at its edges: how an fp16 TensorRT engine is made
where the builder has no FP16 flag (TensorRT 11, TensorRT-RTX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeexit.errors import ExportError


def half_onnx(src: Path, dst: Path) -> Path:
    """The ONNX graph at `src` with fp16 weights and fp16 arithmetic, its inputs and outputs still float32 (a Cast at
    each end), written to `dst`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # never follow external data: the graph's weights are in the file (edgeexit exports them so), nothing else is read
    model = onnx.load(str(src), load_external_data=False)
    g = model.graph
    F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
    limit = float(np.finfo(np.float16).max)

    def half(t):
        return numpy_helper.from_array(np.clip(numpy_helper.to_array(t), -limit, limit).astype(np.float16), t.name)

    for i, t in enumerate(g.initializer):
        if t.data_type == F32:
            g.initializer[i].CopyFrom(half(t))
    for node in g.node:
        if node.op_type in ("If", "Loop", "Scan"):
            raise ExportError(f"{Path(src).name}: fp16 conversion does not enter subgraphs", got=node.op_type,
                              expected="a graph without control flow", hint="export --precision fp32")
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == F32:
                a.t.CopyFrom(half(a.t))
            elif node.op_type == "Cast" and a.name == "to" and a.i == F32:
                a.i = F16
            elif node.op_type == "CastLike":
                pass  # follows its second input, already fp16
    renames = {}
    front = []
    for inp in g.input:
        if inp.type.tensor_type.elem_type == F32:
            renames[inp.name] = f"{inp.name}__fp16"
            front.append(helper.make_node("Cast", [inp.name], [renames[inp.name]], to=F16, name=f"{inp.name}__to_fp16"))
    for node in g.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
    back = []
    for out in g.output:
        if out.type.tensor_type.elem_type == F32:
            inner = f"{out.name}__fp16"
            for node in g.node:
                node.output[:] = [inner if n == out.name else n for n in node.output]
                node.input[:] = [inner if n == out.name else n for n in node.input]
            back.append(helper.make_node("Cast", [inner], [out.name], to=F32, name=f"{out.name}__to_fp32"))
    nodes = front + list(g.node) + back
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]  # the float32 intermediate types no longer hold; TensorRT infers them
    dst = Path(dst)
    onnx.save(model, str(dst))
    return dst
