# Copyright (c) mmgem contributors. All rights reserved.
from .compat import load_local_checkpoint, patch_mmengine_checkpoint_loading
from .mmdet_tools import mmdet_tool_path, run_mmdet_tool

__all__ = [
    'load_local_checkpoint', 'patch_mmengine_checkpoint_loading', 'mmdet_tool_path',
    'run_mmdet_tool'
]
