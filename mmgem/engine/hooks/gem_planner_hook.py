# Copyright (c) mmgem contributors. All rights reserved.
"""GEMPlannerHook: plans the dataset-to-expert map before training starts."""
from typing import Optional, Sequence

import numpy as np
import torch.nn as nn
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from mmgem.datasets import find_uodb_dataset
from mmgem.engine.planning import (
    PlanningConfig,
    PlanningService,
    check_plan_fits,
    write_plan_outputs,
)
from mmgem.models.layers.routing_table import plan_of_state_dict, upgrade_legacy_state_dict

#: key of the whole plan in checkpoints made before the model's routing table
LEGACY_CKPT_KEY = 'gem_plan'


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) else model


@HOOKS.register_module()
class GEMPlannerHook(Hook):
    """Give the model its GEM plan before the first training iteration.

    A thin hook over :class:`~mmgem.engine.planning.PlanningService`. Before
    training (after MMEngine has loaded or resumed a checkpoint) it takes the
    plan the model holds (restored from a checkpoint, or from
    ``model.plan_file``), checks it against the config and data (datasets,
    loads up to a sampler's padding, experts, capacity factor, beta,
    similarity sources, training image ids), and re-uses it; or, with no plan
    or ``on_mismatch='replan'``, plans on rank 0 (similarity, LP, rounding,
    thresholds cut at the training images) and broadcasts the plan to every
    rank. It attaches the plan and the label offsets to the model (whose
    ``routing_table`` checkpoints carry) and writes ``gem_plan.json`` and
    ``gem_plan.png`` to the work dir and the Visualizer.

    A checkpoint whose plan does not fit the model or the datasets is refused
    in ``after_load_checkpoint``, before MMEngine copies its weights; a
    checkpoint made before the routing table (plan buffers and
    ``checkpoint['gem_plan']``) is converted there.

    Args:
        num_experts (int, optional): Experts per MoE layer; must agree with
            the model's. Defaults to the model's.
        capacity_factor (float, optional): Expert capacity factor; None for
            no limit. Defaults to 1.25.
        beta (float): Fairness exponent of the dataset weights. Defaults to 0.
        similarity (dict, optional): ``sources``/``prior`` or ``matrix``.
            Defaults to ``dict(sources=dict(labels=1.0))``.
        num_probe_images (int): Images per dataset for the ``features``
            source. Defaults to 8.
        solver (str): CVXPY LP solver. Defaults to ``'ECOS'``.
        fallback_solvers (Sequence[str], optional): Tried if ``solver`` is
            not installed. Defaults to None.
        rounding (str): ``'auto'``, ``'heuristic'`` or ``'exact'``. Defaults
            to ``'auto'``.
        on_mismatch (str): ``'error'`` (default) or ``'replan'``.

    See :class:`~mmgem.engine.planning.PlanningConfig` for the settings.
    """

    priority = 'VERY_HIGH'

    def __init__(self,
                 num_experts: Optional[int] = None,
                 capacity_factor: Optional[float] = 1.25,
                 beta: float = 0.0,
                 similarity: Optional[dict] = None,
                 num_probe_images: int = 8,
                 solver: str = 'ECOS',
                 fallback_solvers: Optional[Sequence[str]] = None,
                 rounding: str = 'auto',
                 on_mismatch: str = 'error') -> None:
        self.service = PlanningService(PlanningConfig(
            num_experts=num_experts, capacity_factor=capacity_factor, beta=beta,
            similarity=similarity, num_probe_images=num_probe_images, solver=solver,
            fallback_solvers=fallback_solvers, rounding=rounding, on_mismatch=on_mismatch))
        self.plan = None

    def before_run(self, runner: Runner) -> None:
        """Check the settings and a ``plan_file`` plan against the model."""
        model = self._model(runner)
        num_experts = self.service.config.num_experts
        if num_experts is not None and num_experts != model.num_experts:
            raise ValueError(f'GEMPlannerHook(num_experts={num_experts}) does not match the '
                             f"model's num_experts={model.num_experts}; set one of them so they "
                             "agree (or leave the hook's num_experts unset)")
        table = model.routing_table
        if table.plan is not None:
            check_plan_fits(table.plan, model.num_datasets, model.num_experts, None, table.source)

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        """Convert an old checkpoint's plan; refuse one that does not fit."""
        state = checkpoint.get('state_dict', checkpoint)
        upgrade_legacy_state_dict(state, plan=checkpoint.pop(LEGACY_CKPT_KEY, None))
        plan = plan_of_state_dict(state)
        if plan is not None:
            model = _unwrap(runner.model)
            check_plan_fits(plan, model.num_datasets, model.num_experts,
                            self._runner_dataset_names(runner, model), 'checkpoint')

    def before_train(self, runner: Runner) -> None:
        """Check or make the plan and attach it to the model."""
        model = self._model(runner)
        table = model.routing_table
        if model.has_plan() and table.plan is None:
            raise RuntimeError(
                f'The model holds a GEM routing table (hash {table.plan_hash[:12]!r}) without '
                'the plan it came from; refusing to train with a plan that cannot be checked. '
                'Start from a checkpoint saved with GEMPlannerHook, or from one without a plan.')
        dataset = find_uodb_dataset(runner.train_dataloader.dataset)
        given = table.plan
        source = ('the plan restored from the checkpoint' if table.source == 'checkpoint' else
                  f'the plan of model.{table.source}')
        if given is not None:
            check_plan_fits(given, model.num_datasets, model.num_experts,
                            dataset.dataset_names, table.source)
        inputs = self.service.inputs(runner.train_dataloader, model.num_experts)
        plan = self.service.training_plan(runner.train_dataloader, model, given, source,
                                          runner.logger, inputs=inputs)
        check_plan_fits(plan, model.num_datasets, model.num_experts, dataset.dataset_names,
                        'planner')
        model.set_label_offsets(np.asarray(dataset.label_offsets))
        if given is not None and plan.hash == given.hash:
            runner.logger.info(f'GEMPlannerHook: re-using {source} (plan {plan.hash[:12]}, '
                               'no re-planning).')
        else:
            model.attach_plan(plan, source='GEMPlannerHook')
            realised = plan.realised_counts(inputs['image_ids'])
            runner.logger.info(f'GEMPlannerHook: installed GEM plan {plan.hash[:12]}\n{plan}\n'
                               f'realised training images per expert: {realised.sum(0).tolist()}')
        self.plan = plan
        write_plan_outputs(plan, runner.work_dir, runner.visualizer, runner.iter)

    @staticmethod
    def _model(runner: Runner) -> nn.Module:
        model = _unwrap(runner.model)
        if not hasattr(model, 'attach_plan'):
            raise TypeError('GEMPlannerHook needs a model with attach_plan() (GEMDINO), '
                            f'got {type(model).__name__}')
        return model

    @staticmethod
    def _runner_dataset_names(runner: Runner, model=None) -> Optional[tuple]:
        """Dataset names of the first built loop's dataset, if any is built.

        A val / test loop counts only when ``model`` reads its images'
        dataset ids (``test_dataset_known``, the default): with the dataset
        unknown, the evaluated datasets need not be the model's (an unseen
        domain held out of training), and the plan's rows are chosen by the
        domain classifier among the model's datasets.
        """
        known = getattr(model, 'test_dataset_known', True)
        for attr in ('_train_loop', '_val_loop', '_test_loop'):
            loader = getattr(getattr(runner, attr, None), 'dataloader', None)
            if loader is None or (attr != '_train_loop' and not known):
                continue
            try:
                return tuple(find_uodb_dataset(loader.dataset).dataset_names)
            except TypeError:
                return None  # not a UODB loop: nothing to check against
        return None
