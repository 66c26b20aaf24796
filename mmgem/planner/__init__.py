# Copyright (c) mmgem contributors. All rights reserved.
"""GEM's global planner: pure numpy + cvxpy, no torch."""
from .compiler import CompiledPlan, compile_plan
from .errors import PlanError, SolverFailedError, SolverUnavailableError
from .hashing import image_bucket, route_bucket
from .lp import LPSolution, fastest_installed_solver, installed_solvers, solve_gem_lp
from .plan import GEMPlan, dataset_weights
from .planner import check_loads, make_plan, plan_capacity
from .rounding import highest_averages, largest_remainder, round_half_up
from .similarity import (
                 build_similarity,
                 check_similarity,
                 feature_similarity,
                 label_similarity,
                 normalize_class_name,
                 prior_similarity,
)
from .stats import DatasetStats, load_dataset_stats

__all__ = [
    'image_bucket', 'route_bucket', 'make_plan', 'GEMPlan', 'build_similarity',
    'PlanError', 'SolverFailedError', 'SolverUnavailableError', 'LPSolution',
    'solve_gem_lp', 'compile_plan', 'CompiledPlan', 'installed_solvers',
    'fastest_installed_solver', 'largest_remainder', 'highest_averages',
    'round_half_up', 'check_loads', 'plan_capacity', 'dataset_weights',
    'check_similarity', 'prior_similarity', 'label_similarity',
    'feature_similarity', 'normalize_class_name', 'DatasetStats',
    'load_dataset_stats'
]
