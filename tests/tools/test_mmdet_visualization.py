# Copyright (c) mmgem contributors. All rights reserved.
"""mmdet's own browse_dataset.py and test.py --show-dir on the tiny GEM config.

Every mini-UODB domain (like every UODB dataset) names its images
``000000.jpg, ...``; mmdet names drawn images by ``basename(img_path)``, so
without :class:`UODBLocalVisualizer` one domain's images overwrite another's.
"""
from pathlib import Path

import numpy as np
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
from tool_utils import GEM_CONFIG, REPO, data_options, run_tool, split_images

from mmgem.utils.mmdet_tools import mmdet_tool_path
from mmgem.visualization import UODBLocalVisualizer


def _drawn(folder: Path) -> dict:
    """File names under ``folder``, per sub-folder."""
    files = [p for p in folder.rglob('*') if p.is_file()]
    out = {}
    for path in files:
        out.setdefault(path.parent.name, []).append(path.name)
    return {k: sorted(v) for k, v in out.items()}


def test_browse_dataset_writes_every_image_once(mini_uodb_root, tmp_path):
    """mmdet's browse_dataset.py, unchanged: one file per training image."""
    out_dir = tmp_path / 'browse'
    run_tool([mmdet_tool_path('analysis_tools/browse_dataset.py'), str(REPO / GEM_CONFIG),
              '--output-dir', str(out_dir), '--not-show', '--cfg-options',
              *data_options(mini_uodb_root)], cwd=tmp_path)
    expected = split_images(mini_uodb_root, 'train')
    assert sum(map(len, expected.values())) > len(set().union(*expected.values()))  # clashes
    assert _drawn(out_dir) == expected


def test_test_show_dir_writes_every_image_once(mini_uodb_root, tiny_gem_checkpoint, tmp_path):
    """tools/test.py --show-dir on a config without GEMPlannerHook."""
    work_dir = tmp_path / 'work'
    out = run_tool([str(REPO / 'tools' / 'test.py'), str(REPO / GEM_CONFIG),
                    str(tiny_gem_checkpoint), '--work-dir', str(work_dir), '--show-dir', 'show',
                    '--cfg-options', 'custom_hooks=[]', *data_options(mini_uodb_root)],
                   cwd=tmp_path)
    assert 'uodb/bbox_mAP' in out
    (show,) = work_dir.glob('*/show')  # <work_dir>/<timestamp>/show, as mmdet puts it
    assert _drawn(show) == split_images(mini_uodb_root, 'test')


def test_visualizer_names_classes_without_the_folders_prefix(monkeypatch, tmp_path):
    classes = ('natural/person', 'natural/car', 'aerial/plane', 'aerial/car')
    visualizer = UODBLocalVisualizer(name='uodb_vis_test')
    visualizer.dataset_meta = dict(classes=classes, dataset_names=('natural', 'aerial'))
    texts = []
    draw_texts = visualizer.draw_texts
    monkeypatch.setattr(visualizer, 'draw_texts',
                        lambda text, *args, **kw: (texts.append(text), draw_texts(text, *args,
                                                                                 **kw))[1])
    sample = DetDataSample(metainfo=dict(dataset_id=1, img_path='x/000000.jpg'))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[2., 2., 20., 20.], [30., 30., 50., 50.], [5., 30., 25., 55.]]),
        labels=torch.tensor([2, 3, 0]))
    image = np.zeros((64, 64, 3), np.uint8)
    visualizer.add_datasample('000000.jpg', image, sample, draw_pred=False,
                              out_file=str(tmp_path / 'vis' / '000000.jpg'))
    # the folder's (aerial) classes bare, another dataset's label keeps its prefix
    assert texts == ['plane', 'car', 'natural/person']
    assert (tmp_path / 'vis' / 'aerial' / '000000.jpg').is_file()
    assert visualizer.dataset_meta['classes'] == classes  # restored

    texts.clear()  # a sample of unknown dataset is drawn as by DetLocalVisualizer
    unknown = DetDataSample(metainfo=dict(img_path='y/000000.jpg'))
    unknown.gt_instances = sample.gt_instances
    visualizer.add_datasample('000000.jpg', image, unknown, draw_pred=False,
                              out_file=str(tmp_path / 'plain' / '000000.jpg'))
    assert texts == ['aerial/plane', 'aerial/car', 'natural/person']
    assert (tmp_path / 'plain' / '000000.jpg').is_file()
