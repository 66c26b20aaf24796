# Copyright (c) mmgem contributors. All rights reserved.
"""GEM-DINO: the MoE decoder layers and the detector."""
from .detectors import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403
