"""Early-exit networks: backbone adapters, exit placement and heads."""

from edgeexit.models.backbone import Backbone
from edgeexit.models.build import (
    HEAD_KINDS,
    ModelConfig,
    backbone,
    build_model,
    exit_blocks,
    list_backbones,
)
from edgeexit.models.net import EarlyExitNet, ExitSegment, UnsplitModel
from edgeexit.models.small_families import from_sequential

__all__ = [
    "Backbone", "EarlyExitNet", "ExitSegment", "HEAD_KINDS", "ModelConfig", "UnsplitModel",
    "backbone", "build_model", "exit_blocks", "from_sequential", "list_backbones",
]
