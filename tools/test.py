# Copyright (c) mmgem contributors. All rights reserved.
"""Test a detector with mmgem's modules registered.

The command line is exactly mmdet's ``tools/test.py`` (``config``,
``checkpoint``, ``--work-dir``, ``--out``, ``--show-dir``, ``--tta``,
``--cfg-options``, ``--launcher``); this wrapper imports :mod:`mmgem` first
and then runs mmdet's own script::

    python tools/test.py configs/gem/gem-dino-tiny_r18_mini-uodb.py \\
        work_dirs/gem-dino-tiny_r18_mini-uodb/iter_400.pth --show-dir show
    bash tools/dist_test.sh CONFIG CHECKPOINT 8
"""
import mmgem  # noqa: F401
from mmgem.utils.mmdet_tools import run_mmdet_tool

if __name__ == '__main__':
    run_mmdet_tool('test.py')
