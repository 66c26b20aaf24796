# Copyright (c) mmgem contributors. All rights reserved.
"""Train a detector with mmgem's modules registered.

The command line is exactly mmdet's ``tools/train.py`` (same arguments:
``config``, ``--work-dir``, ``--amp``, ``--auto-scale-lr``, ``--resume``,
``--cfg-options``, ``--launcher``); this wrapper imports :mod:`mmgem` first
(registering GEM's modules; mmgem's configs name its ``GEMRunner`` and
``GEMCheckpointHook``) and then runs mmdet's own script, so behaviour stays
identical to mmdet's::

    python tools/train.py configs/gem/gem-dino-tiny_r18_mini-uodb.py
    bash tools/dist_train.sh configs/gem/gem-dino-4scale_r50_8xb2-36e_uodb.py 8
"""
import mmgem  # noqa: F401
from mmgem.utils.mmdet_tools import run_mmdet_tool

if __name__ == '__main__':
    run_mmdet_tool('train.py')
