"""Export as stages: split into `torch.export` programs, then one lowering per format (ONNX, .pt2; .pte and
TensorRT engines plug in the same way)."""

from edgeexit.export.lower_onnx import check_onnx, lower_onnx
from edgeexit.export.lower_pt2 import lower_pt2
from edgeexit.export.split import INPUT, Program, export_program, split_programs

__all__ = ["INPUT", "Program", "check_onnx", "export_program", "lower_onnx", "lower_pt2", "split_programs"]
