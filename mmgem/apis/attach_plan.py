# Copyright (c) mmgem contributors. All rights reserved.
"""attach_plan: give a built GEM model a plan without training."""
from typing import Union

from mmengine.model import is_model_wrapper
from torch import nn

from mmgem.planner import GEMPlan


def attach_plan(model: nn.Module, plan: Union[GEMPlan, str], force: bool = False) -> GEMPlan:
    """Attach a GEM plan to a built model, as ``model.plan_file`` does in configs.

    Args:
        model (nn.Module): A GEM-DINO (or a wrapper of one).
        plan (GEMPlan | str): The plan, or the path of its JSON
            (``gem_plan.json`` of a training run or of
            ``tools/analysis_tools/gem_plan.py``).
        force (bool): Accept a plan file without a valid hash (edited on
            purpose) after re-validating its quota, capacity and cost.
            Defaults to False.

    Returns:
        GEMPlan: The attached plan.
    """
    model = model.module if is_model_wrapper(model) else model
    if not hasattr(model, 'attach_plan'):
        raise TypeError(f'attach_plan needs a GEM model (attach_plan()), got '
                        f'{type(model).__name__}')
    source = 'plan'
    if not isinstance(plan, GEMPlan):
        source = f'plan_file={str(plan)!r}'
        plan = GEMPlan.load(str(plan), force=force)
    model.attach_plan(plan, source=source)
    return plan
