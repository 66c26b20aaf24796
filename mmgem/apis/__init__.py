# Copyright (c) mmgem contributors. All rights reserved.
from .attach_plan import attach_plan
from .gem_det_inferencer import GEMDetInferencer, InferenceDatasetInfo

__all__ = ['GEMDetInferencer', 'InferenceDatasetInfo', 'attach_plan']
