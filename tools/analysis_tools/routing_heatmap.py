# Copyright (c) mmgem contributors. All rights reserved.
"""Draw a checkpoint's dataset x expert routing heat maps (DAMEX Fig. 3).

Runs the config's test loop on the checkpoint with
:class:`~mmgem.engine.MoERoutingVisualizationHook` and writes, into
``--work-dir``, one heat map per MoE layer
(``moe_routing_test_decoder_layer_<i>.png``), the tables
(``moe_routing_test.md``) and the per-dataset AP table; the heat maps also go
to the config's visualizer backends::

    python tools/analysis_tools/routing_heatmap.py \\
        configs/gem/damex-dino-tiny_r18_mini-uodb.py work_dirs/damex/iter_600.pth \\
        --work-dir work_dirs/damex_routing --score-thr 0.3
"""
import argparse
import os.path as osp

from mmengine.config import Config, DictAction

import mmgem  # noqa: F401
from mmgem.engine.runner import build_runner


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='test config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the heat maps and tables go '
                        '(default: work_dirs/<config>_routing)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='lowest class probability of a foreground query')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0] + '_routing')
    cfg.load_from = args.checkpoint
    hooks = [h for h in cfg.get('custom_hooks', [])
             if h.get('type') != 'MoERoutingVisualizationHook']
    hooks.append(dict(type='MoERoutingVisualizationHook', score_thr=args.score_thr))
    cfg.custom_hooks = hooks
    runner = build_runner(cfg)
    runner.test()
    print(f'routing heat maps and tables written to {osp.abspath(cfg.work_dir)}')


if __name__ == '__main__':
    main()
