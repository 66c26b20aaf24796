# Copyright (c) mmgem contributors. All rights reserved.
"""Small utilities.

Only :mod:`.fileio` is imported here (standard library only, so the planner
can use it without torch); import :mod:`mmgem.utils.mmdet_tools` by its full name
(and :mod:`mmgem.utils.tool_scripts`, which lets ``tools/`` scripts run by path).
"""
from .fileio import StagingDir, atomic_write, current_umask, dir_mode, file_mode

__all__ = ['atomic_write', 'StagingDir', 'current_umask', 'file_mode', 'dir_mode']
