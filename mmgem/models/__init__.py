# Copyright (c) mmgem contributors. All rights reserved.
"""GEM-DINO: the MoE decoder layers, the dataset-aware head and the detector."""
from .dense_heads import *  # noqa: F401,F403
from .detectors import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403
from .routers import *  # noqa: F401,F403
