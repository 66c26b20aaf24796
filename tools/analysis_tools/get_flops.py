# Copyright (c) mmgem contributors. All rights reserved.
"""FLOPs and parameters of a detector: mmdet's ``get_flops.py``, mmgem registered.

A GEM model built from a config routes only with a plan; give it the plan
JSON of a training run or of ``tools/analysis_tools/gem_plan.py``::

    python tools/analysis_tools/get_flops.py configs/gem/gem-dino-tiny_r18_mini-uodb.py \\
        --cfg-options model.plan_file=work_dirs/gem-dino-tiny_r18_mini-uodb/gem_plan.json
"""
import mmgem  # noqa: F401
from mmgem.utils.mmdet_tools import run_mmdet_tool

if __name__ == '__main__':
    run_mmdet_tool('analysis_tools/get_flops.py')
