"""Decide on the device: a latency model of any deployment fitted from a profile, and one search over deployments
(exit subsets x thresholds, static truncations included) for an accuracy drop or a budget."""

from edgeexit.deploy.costmodel import BatchFit, CostModel, fit_cost_model, read_cost_model
from edgeexit.deploy.search import (
    Deployment,
    DeploymentCost,
    LatencyCost,
    MacCost,
    Objective,
    SearchResult,
    make_objective,
    search_deployments,
    validation_arrays,
)

__all__ = [
    "BatchFit", "CostModel", "Deployment", "DeploymentCost", "LatencyCost", "MacCost", "Objective", "SearchResult",
    "fit_cost_model", "make_objective", "read_cost_model", "search_deployments", "validation_arrays",
]
