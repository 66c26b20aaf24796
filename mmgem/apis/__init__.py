# Copyright (c) mmgem contributors. All rights reserved.
from .gem_det_inferencer import GEMDetInferencer, InferenceDatasetInfo

__all__ = ['GEMDetInferencer', 'InferenceDatasetInfo']
