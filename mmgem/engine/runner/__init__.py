# Copyright (c) mmgem contributors. All rights reserved.
from .checkpoint_loading import (
                                 UnsafeCheckpointError,
                                 checkpoint_problem,
                                 find_latest_complete_checkpoint,
                                 load_checkpoint_file,
)
from .gem_runner import GEMRunner, build_runner

__all__ = [
    'GEMRunner', 'build_runner', 'UnsafeCheckpointError', 'checkpoint_problem',
    'find_latest_complete_checkpoint', 'load_checkpoint_file'
]
