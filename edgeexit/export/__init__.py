"""Split an early-exit network into segments and compile them for a target."""

from edgeexit.export.onnx import check_against_torch, export_segments, export_unsplit, segment_output_shapes

__all__ = ["check_against_torch", "export_segments", "export_unsplit", "segment_output_shapes"]
