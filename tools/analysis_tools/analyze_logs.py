# Copyright (c) mmgem contributors. All rights reserved.
"""Plot curves or training time of a log: mmdet's ``analyze_logs.py``.

``UODBMetric``'s keys have a single ``/`` (``uodb/bbox_mAP``, the mean, then
``uodb/<dataset>_bbox_mAP``), so ``--keys bbox_mAP`` plots the mean and
``--keys natural_bbox_mAP`` one dataset. mmdet's script needs ``seaborn``
(``requirements/optional.txt``)::

    python tools/analysis_tools/analyze_logs.py plot_curve \\
        work_dirs/x/<timestamp>/vis_data/<timestamp>.json --keys bbox_mAP --out mAP.png
"""
import mmgem  # noqa: F401
from mmgem.utils.mmdet_tools import run_mmdet_tool

if __name__ == '__main__':
    run_mmdet_tool('analysis_tools/analyze_logs.py')
