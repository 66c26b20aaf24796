# Copyright (c) mmgem contributors. All rights reserved.
from .gem_planner_hook import GEMPlannerHook

__all__ = ['GEMPlannerHook']
