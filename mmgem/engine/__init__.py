# Copyright (c) mmgem contributors. All rights reserved.
from .hooks import GEMPlannerHook

__all__ = ['GEMPlannerHook']
