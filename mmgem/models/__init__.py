# Copyright (c) mmgem contributors. All rights reserved.
"""GEM-DINO: the MoE decoder layers and the detector."""
from .layers import *  # noqa: F401,F403
