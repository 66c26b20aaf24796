# Copyright (c) mmgem contributors. All rights reserved.
"""Dataset x expert routing heat maps at validation and test time."""
import os.path as osp
from typing import Optional, Sequence

import cv2
import torch
from mmdet.registry import HOOKS
from mmengine.dist import all_reduce, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from mmgem.datasets.samplers.expected_images import find_uodb_dataset
from mmgem.models.utils.routing_stats import expert_dataset_nmi
from mmgem.utils.fileio import atomic_write
from mmgem.visualization import RoutingTally, draw_share_heatmap, moe_layer_names


@HOOKS.register_module()
class MoERoutingVisualizationHook(Hook):
    """Show where each dataset's foreground tokens go, per MoE layer.

    During every validation (and test) epoch the model keeps the routing of
    each forward (``GEMDINO.record_routing``); the hook counts, for every MoE
    layer, the foreground tokens of each dataset per expert
    (:class:`~mmgem.visualization.RoutingTally`: queries whose best class
    probability is at least ``score_thr``, counted under the image's true
    dataset). At the end of the epoch (counts summed over ranks) it

    - logs one table per MoE layer (share of each dataset's foreground tokens
      per expert, and the token counts),
    - sends one heat map per MoE layer to MMEngine's visualizer
      (``moe_routing_decoder_layer_<i>``), so every configured ``vis_backends``
      (local files, TensorBoard, W&B) receives it,
    - writes the tables to ``<work_dir>/moe_routing_<mode>.md`` and the heat
      maps to ``<work_dir>/moe_routing_<mode>_decoder_layer_<i>.png`` (the
      latest epoch's).

    This is DAMEX's Figure 3 for every row of the benchmark (``gem``,
    ``damex``, ``moe``); a dense model has no MoE layer and the hook does
    nothing.

    Args:
        score_thr (float): Lowest class probability of a foreground query.
            Defaults to 0.3.
        dataset_names (Sequence[str], optional): Row names; None reads them
            from the dataloader's UODBDataset (``dataset_names``).
    """

    priority = 'LOW'

    def __init__(self, score_thr: float = 0.3,
                 dataset_names: Optional[Sequence[str]] = None) -> None:
        if not 0 <= score_thr <= 1:
            raise ValueError(f'score_thr must be in [0, 1], got {score_thr}')
        self.score_thr = score_thr
        self.dataset_names = None if dataset_names is None else list(dataset_names)
        self.tally: Optional[RoutingTally] = None

    @staticmethod
    def _model(runner: Runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def _start(self, runner: Runner, mode: str) -> None:
        model = self._model(runner)
        ffns = model.moe_ffns() if hasattr(model, 'moe_ffns') else []
        if not ffns:
            self.tally = None
            return
        model.record_routing = True
        # one row per *evaluated* dataset (the images' true ones), which with
        # an unseen domain held out of training are not the model's
        self.tally = None
        rows = len(self._names(runner, mode, default=model.num_datasets))
        self.tally = RoutingTally(len(ffns), rows, model.num_experts, self.score_thr)

    def _step(self, runner: Runner) -> None:
        if self.tally is None:
            return
        record = self._model(runner).routing_record
        if record is not None:
            self.tally.update(record)

    def _finish(self, runner: Runner, mode: str) -> None:
        if self.tally is None:
            return
        model = self._model(runner)
        model.record_routing = False
        model.routing_record = None
        counts = torch.from_numpy(self.tally.counts)
        all_reduce(counts)
        self.tally.counts = counts.numpy()
        names = self._names(runner, mode)
        layers = moe_layer_names(model)
        nmis = [expert_dataset_nmi(self.tally.counts[i]) for i in range(len(layers))]
        tables = [
            self.tally.table(i, names, layer) + f'\n\nNMI(dataset; expert) = {nmis[i]:.3f}'
            for i, layer in enumerate(layers)
        ]
        for layer, nmi in zip(layers, nmis):
            runner.message_hub.update_scalar(f'{mode}/moe_nmi_{layer.replace(" ", "_")}', nmi)
        runner.logger.info(f'MoE routing ({mode}):\n' + '\n\n'.join(tables))
        step = runner.iter if mode == 'val' else 0
        shares = self.tally.shares()
        for i, layer in enumerate(layers):
            image = draw_share_heatmap(
                shares[i], names, [f'e{e}' for e in range(shares.shape[2])],
                f'{model.routing} routing, {layer}: foreground tokens per expert '
                f'(NMI {nmis[i]:.2f})')
            name = f'moe_routing_{layer.replace(" ", "_")}'
            runner.visualizer.add_image(name, image, step=step)
            if is_main_process():
                png = cv2.imencode('.png', image[..., ::-1])[1].tobytes()
                atomic_write(osp.join(runner.work_dir, f'moe_routing_{mode}_{name[12:]}.png'),
                             png)
        if is_main_process():
            atomic_write(
                osp.join(runner.work_dir, f'moe_routing_{mode}.md'),
                ('\n\n'.join(tables) + '\n').encode('utf-8'))
        self.tally = None

    def _names(self, runner: Runner, mode: str, default: int = 0) -> list:
        if self.dataset_names is not None:
            return self.dataset_names
        loader = runner.test_dataloader if mode == 'test' else runner.val_dataloader
        try:
            return list(find_uodb_dataset(loader.dataset).dataset_names)
        except TypeError:
            num = default if self.tally is None else self.tally.counts.shape[1]
            return [f'dataset {d}' for d in range(num)]

    def before_val_epoch(self, runner: Runner) -> None:
        """Start counting."""
        self._start(runner, 'val')

    def after_val_iter(self, runner: Runner, batch_idx: int, data_batch=None,
                       outputs=None) -> None:
        """Count the routing of this batch."""
        self._step(runner)

    def after_val_epoch(self, runner: Runner, metrics=None) -> None:
        """Log, draw and write the epoch's routing."""
        self._finish(runner, 'val')

    def before_test_epoch(self, runner: Runner) -> None:
        """Start counting."""
        self._start(runner, 'test')

    def after_test_iter(self, runner: Runner, batch_idx: int, data_batch=None,
                        outputs=None) -> None:
        """Count the routing of this batch."""
        self._step(runner)

    def after_test_epoch(self, runner: Runner, metrics=None) -> None:
        """Log, draw and write the epoch's routing."""
        self._finish(runner, 'test')
