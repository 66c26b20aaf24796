# Copyright (c) mmgem contributors. All rights reserved.
"""GEM planning as a service: settings, training inputs, plan making, checks."""
from .feature_probe import probe_features
from .planning_config import ON_MISMATCH, PlanningConfig
from .service import PlanningService, broadcast_plan, check_plan_fits, write_plan_outputs
from .training_inputs import (
    PADDING_TOLERANCE,
    plan_mismatches,
    same_mix,
    training_image_ids,
    training_inputs,
)

__all__ = [
    'PlanningConfig', 'PlanningService', 'ON_MISMATCH', 'PADDING_TOLERANCE', 'broadcast_plan',
    'check_plan_fits', 'plan_mismatches', 'probe_features', 'same_mix', 'training_image_ids',
    'training_inputs', 'write_plan_outputs'
]
