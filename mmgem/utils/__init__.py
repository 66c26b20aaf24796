# Copyright (c) mmgem contributors. All rights reserved.
from .compat import patch_mmengine_checkpoint_loading

__all__ = ['patch_mmengine_checkpoint_loading']
