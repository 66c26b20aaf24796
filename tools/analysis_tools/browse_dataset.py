# Copyright (c) mmgem contributors. All rights reserved.
"""Draw a dataset's images and boxes: mmdet's ``browse_dataset.py``, mmgem registered.

With ``visualizer = dict(type='UODBLocalVisualizer')`` (set in mmgem's configs)
the images of each dataset go to ``<output-dir>/<dataset>/`` (every UODB
dataset names its images ``000000.jpg, ...``) and boxes are labelled with the
class name without its dataset prefix::

    python tools/analysis_tools/browse_dataset.py \\
        configs/gem/gem-dino-tiny_r18_mini-uodb.py --output-dir browse --not-show
    mim run mmgem browse_dataset configs/gem/gem-dino-tiny_r18_mini-uodb.py \\
        --output-dir browse --not-show
"""
import mmgem  # noqa: F401
from mmgem.utils.mmdet_tools import run_mmdet_tool

if __name__ == '__main__':
    run_mmdet_tool('analysis_tools/browse_dataset.py')
