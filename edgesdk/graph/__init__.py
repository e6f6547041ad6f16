"""Model analysis: safe loading, shapes and costs, per-board support check, partitioning, segment extraction."""

from edgesdk.graph.extract import run_segments, segment_model, write_segments
from edgesdk.graph.load import Model, load_model, parse_input_shape
from edgesdk.graph.partition import (
    DEFAULT_MIN_ISLAND_SHARE,
    FoldedIsland,
    PartitionPlan,
    Segment,
    TensorRef,
    Transfer,
    is_convex,
    partition,
)
from edgesdk.graph.shapes import NodeCost, TensorInfo
from edgesdk.graph.support import Placement, SupportReport, check_support

__all__ = [
    "DEFAULT_MIN_ISLAND_SHARE",
    "FoldedIsland",
    "Model",
    "NodeCost",
    "PartitionPlan",
    "Placement",
    "Segment",
    "SupportReport",
    "TensorInfo",
    "TensorRef",
    "Transfer",
    "check_support",
    "is_convex",
    "load_model",
    "parse_input_shape",
    "partition",
    "run_segments",
    "segment_model",
    "write_segments",
]
