# Copyright (c) mmgem contributors. All rights reserved.
"""GEM's global planner: pure numpy + cvxpy, no torch.

Typical use (what ``GEMPlannerHook`` does before training)::

    from mmgem.planner import build_similarity, make_plan

    S = build_similarity(names, labels=classes_per_dataset)
    plan = make_plan(names, images_per_epoch, S, num_experts=8,
                     capacity_factor=1.25, beta=0.0, solver='ECOS')
    print(plan)                      # datasets x experts table, LP bound, optimum
    plan.save('gem_plan.json')       # exact JSON, atomic, hashed
    plan.plot('gem_plan.png')        # heat map
    expert = plan.expert_of('coco', image_id)

Pass ``image_ids={name: training ids}`` to make the quotas exact (the
thresholds are cut at those images).

``tools/analysis_tools/gem_plan.py`` does the same from a statistics file or
a training config.
"""
from .compiler import CompiledPlan, compile_plan
from .errors import PlanError, SolverFailedError, SolverUnavailableError
from .hashing import (
    BUCKET_END,
    bucket_thresholds,
    expert_of_bucket,
    experts_of_buckets,
    image_bucket,
    image_buckets,
    route_bucket,
    threshold_errors,
)
from .lp import (
                      LPSolution,
                      fastest_installed_solver,
                      installed_solvers,
                      lagrangian_bound,
                      solve_gem_lp,
)
from .milp import MILPSolution, solve_gem_milp
from .plan import GEMPlan, dataset_weights, image_id_digest
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
    'image_bucket', 'image_buckets', 'route_bucket', 'expert_of_bucket', 'experts_of_buckets',
    'bucket_thresholds', 'threshold_errors',
    'BUCKET_END', 'image_id_digest', 'lagrangian_bound', 'solve_gem_milp', 'MILPSolution',
    'make_plan', 'GEMPlan', 'build_similarity',
    'PlanError', 'SolverFailedError', 'SolverUnavailableError', 'LPSolution',
    'solve_gem_lp', 'compile_plan', 'CompiledPlan', 'installed_solvers',
    'fastest_installed_solver', 'largest_remainder', 'highest_averages',
    'round_half_up', 'check_loads', 'plan_capacity', 'dataset_weights',
    'check_similarity', 'prior_similarity', 'label_similarity',
    'feature_similarity', 'normalize_class_name', 'DatasetStats',
    'load_dataset_stats'
]
