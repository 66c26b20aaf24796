# Copyright (c) mmgem contributors. All rights reserved.
"""The tiny expert-parallel GEM-DINO config as the Runner tests use it."""
import os.path as osp

from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
EP_CONFIG = osp.join(REPO, 'configs/gem/gem-dino-tiny_r18_mini-uodb_ep.py')


def import_mmgem():
    """Import mmgem and its distributed modules (they register on import)."""
    import mmgem  # noqa: F401
    import mmgem.datasets.samplers.locality_sampler  # noqa: F401
    import mmgem.engine.hooks  # noqa: F401
    import mmgem.engine.optim  # noqa: F401
    import mmgem.engine.wrappers  # noqa: F401


def tiny_ep_config(data_root, work_dir, max_iters, **extra):
    """``gem-dino-tiny_r18_mini-uodb_ep.py`` on the tiny mini-UODB.

    No validation, no parameter schedule, a checkpoint at the end, logs of
    every iteration, label similarity only (the feature probe is not what
    these tests check). The config text is not yapf-formatted: MMEngine
    formats it for every log, dump and checkpoint, on every rank, most of a
    tiny run's time.

    Args:
        data_root (str): The mini-UODB root.
        work_dir (str): The work dir.
        max_iters (int): Training iterations.
        **extra: Merged into the config (``Config.merge_from_dict``).

    Returns:
        Config: The config.
    """
    import_mmgem()
    cfg = Config.fromfile(EP_CONFIG)
    # MMEngine 0.10.7's fromfile drops format_python_code for plain configs: a copy keeps it
    cfg = Config(cfg.to_dict(), filename=cfg.filename, format_python_code=False)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(data_root) + '/'
    cfg.work_dir = str(work_dir)
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = 10**6
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint.interval = max_iters
    cfg.default_hooks.logger.interval = 1
    cfg.custom_hooks[0].similarity = dict(sources=dict(labels=1.0))
    cfg.merge_from_dict(extra)
    return cfg
