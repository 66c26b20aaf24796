# Copyright (c) mmgem contributors. All rights reserved.
"""The installed package: imports, version, registration, mim layout, configs."""
import os.path as osp
import subprocess
import sys
import textwrap

import mmcv
import mmdet
import pytest
from mmengine.config import Config
from mmengine.utils import digit_version

import mmgem
from mmgem.utils.mmdet_tools import mmdet_tool_path

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_versions_and_compiled_ops():
    assert digit_version(mmgem.__version__) >= digit_version('0.1.0')
    assert mmcv.__version__ == '2.1.0'
    assert mmdet.__version__ == '3.3.0'
    # mmdet imports compiled ops: mmcv-lite would fail here.
    from mmcv.ops import MultiScaleDeformableAttention  # noqa: F401


def test_fresh_interpreter_imports():
    out = subprocess.run(
        [sys.executable, '-c', 'import mmgem, mmdet, mmcv.ops; print(mmgem.__version__)'],
        capture_output=True, text=True, cwd='/', check=True)
    assert out.stdout.strip() == mmgem.__version__


def test_mim_layout_ships_configs_and_tools():
    mim = osp.join(osp.dirname(mmgem.__file__), '.mim')
    for name in ('configs', 'tools'):
        assert osp.isdir(osp.join(mim, name)), f'{mim}/{name} missing: reinstall mmgem'
    assert osp.isfile(osp.join(mim, 'tools', 'train.py'))
    assert osp.isfile(osp.join(mim, 'tools', 'test.py'))
    assert osp.isfile(mmdet_tool_path('train.py'))


def test_mmdet_base_config_with_custom_imports(tmp_path):
    cfg_file = tmp_path / 'gem_on_dino.py'
    cfg_file.write_text(textwrap.dedent("""
        _base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
        custom_imports = dict(imports=['mmgem'], allow_failed_imports=False)
        model = dict(num_queries=300)
        """))
    cfg = Config.fromfile(str(cfg_file))
    assert cfg.model.type == 'DINO'
    assert cfg.model.num_queries == 300
    assert cfg.model.decoder.num_layers == 6  # inherited from mmdet's base
    assert cfg.custom_imports['imports'] == ['mmgem']


def test_a_user_config_inherits_an_mmgem_config_by_path(tmp_path):
    """The README's way to inherit mmgem's configs: a path, absolute from anywhere
    (or relative inside the checkout), since mmengine's ``<scope>::`` bases are
    only for the OpenMMLab packages it knows and refuse ``mmgem::``."""
    base = osp.join(REPO, 'configs', 'gem', 'gem-dino-tiny_r18_mini-uodb.py')
    cfg_file = tmp_path / 'my_gem.py'
    cfg_file.write_text(textwrap.dedent(f"""
        _base_ = {base!r}
        model = dict(num_experts=2)
        train_dataloader = dict(dataset=dict(data_root='my_data/'))
        """))
    cfg = Config.fromfile(str(cfg_file))
    assert cfg.model.type == 'GEMDINO' and cfg.model.num_experts == 2
    assert cfg.model.moe_layers == Config.fromfile(base).model.moe_layers  # inherited
    assert cfg.custom_imports['imports'] == ['mmgem']  # mmgem's configs import it for you
    assert cfg.train_dataloader.dataset.data_root == 'my_data/'

    scoped = tmp_path / 'scoped.py'
    scoped.write_text("_base_ = 'mmgem::gem/gem-dino-tiny_r18_mini-uodb.py'\n")
    with pytest.raises(AssertionError, match='does not support to load mmgem config'):
        Config.fromfile(str(scoped))
