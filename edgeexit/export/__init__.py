"""Export as stages: split into `torch.export` programs, then one lowering per format. Each lowering module has
`FORMAT`, `PRECISIONS` and `lower_programs(programs, root, precision=...) -> {program name: SegmentRef}`; one whose
files are device-specific (`BUILT_ON_DEVICE`, TensorRT engines) is not run at export: the bundle carries its sources
(ONNX) and its `write_device_kit` instead."""

from edgeexit.export.lower_onnx import check_onnx, lower_onnx
from edgeexit.export.split import (
    INPUT,
    Program,
    chain_outputs,
    export_program,
    probe_programs,
    split_programs,
)

LOWERINGS = {"onnx": "edgeexit.export.lower_onnx", "pt2": "edgeexit.export.lower_pt2", "pte": "edgeexit.export.lower_pte",
             "engine": "edgeexit.export.lower_engine"}

__all__ = ["INPUT", "LOWERINGS", "Program", "chain_outputs", "check_onnx", "export_program", "lower_onnx", "probe_programs",
           "split_programs"]
