"""Export as stages: split into `torch.export` programs, then one lowering per format. Each lowering module has
`FORMAT`, `PRECISIONS` and `lower_programs(programs, root, precision=...) -> {program name: SegmentRef}`; one whose
files are device-specific (`BUILT_ON_DEVICE`, TensorRT engines) is not run at export: the bundle carries its sources
(ONNX), and `edgeexit engines` (edgeexit/engines.py) builds it on the device.

The names below are imported on first use, so that the engine build modules of this package (trt_parse, fp16_onnx,
engine_build), which the engines stage uses on the device, do not import torch."""

import importlib

LOWERINGS = {"onnx": "edgeexit.export.lower_onnx", "pt2": "edgeexit.export.lower_pt2", "pte": "edgeexit.export.lower_pte",
             "engine": "edgeexit.export.lower_engine"}

_LAZY = {"check_onnx": "edgeexit.export.lower_onnx", "lower_onnx": "edgeexit.export.lower_onnx",
         **{name: "edgeexit.export.split" for name in ("INPUT", "Program", "chain_outputs", "export_program",
                                                       "probe_programs", "split_programs")}}

__all__ = ["INPUT", "LOWERINGS", "Program", "chain_outputs", "check_onnx", "export_program", "lower_onnx", "probe_programs",
           "split_programs"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
