# Copyright (c) mmgem contributors. All rights reserved.
"""PlanningService: the one place that makes, checks and outputs GEM plans.

:class:`~mmgem.engine.hooks.GEMPlannerHook` (training) and
``tools/analysis_tools/gem_plan.py --config`` (offline) both call
:meth:`PlanningService.make_plan`, so the offline plan is the training plan
(same hash).
"""
import os
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch.nn as nn
from mmengine.dist import all_gather_object, broadcast_object_list, get_rank, is_main_process

from mmgem.datasets import find_uodb_dataset
from mmgem.planner import GEMPlan, build_similarity, make_plan
from mmgem.visualization import add_plan_to_visualizer

from .feature_probe import probe_features
from .planning_config import PlanningConfig
from .training_inputs import plan_mismatches, training_inputs


class PlanningService:
    """Builds a GEM plan from a dataloader and a :class:`PlanningConfig`.

    Args:
        config (PlanningConfig | dict): The planning settings (a dict is
            passed to :class:`PlanningConfig`).
    """

    def __init__(self, config) -> None:
        self.config = config if isinstance(config, PlanningConfig) else PlanningConfig(
            **dict(config))

    def inputs(self, dataloader, num_experts: Optional[int] = None) -> Dict[str, Any]:
        """What a plan for this dataloader must be made of.

        Args:
            dataloader: The training dataloader.
            num_experts (int, optional): The model's ``num_experts``, used
                when the config does not set it.

        Returns:
            dict: :func:`~mmgem.engine.planning.training_inputs.training_inputs`.
        """
        cfg = self.config
        return training_inputs(dataloader, cfg.num_experts or num_experts, cfg.capacity_factor,
                               cfg.beta, cfg.similarity_spec())

    def make_plan(self, dataloader, model: Optional[nn.Module] = None,
                  num_experts: Optional[int] = None, inputs: Optional[Dict] = None,
                  logger=None) -> GEMPlan:
        """Solve the plan for a dataloader.

        Args:
            dataloader: The training dataloader.
            model (nn.Module, optional): The detector: its ``num_experts``,
                and its backbone for the ``features`` source (probed in eval
                mode).
            num_experts (int, optional): ``num_experts`` without a model.
            inputs (dict, optional): :meth:`inputs`, if computed.
            logger (optional): Where to log the loads.

        Returns:
            GEMPlan: The plan, thresholds cut at the training images.
        """
        if num_experts is None and model is not None:
            num_experts = model.num_experts
        inputs = inputs or self.inputs(dataloader, num_experts)
        names = inputs['dataset_names']
        if inputs['num_experts'] is None:
            raise ValueError('PlanningService.make_plan needs num_experts: from the planning '
                             'config, the model or the argument')
        similarity = self.similarity(model, find_uodb_dataset(dataloader.dataset), names)
        if logger is not None:
            logger.info('GEM planning: '
                        + ', '.join(f'{n}={load:.1f}' for n, load in zip(names, inputs['loads']))
                        + f' images/epoch on {inputs["num_experts"]} experts')
        cfg = self.config
        return make_plan(names, inputs['loads'], similarity, num_experts=inputs['num_experts'],
                         capacity_factor=cfg.capacity_factor, beta=cfg.beta, solver=cfg.solver,
                         fallback_solvers=cfg.fallback_solvers, rounding=cfg.rounding,
                         image_ids=inputs['image_ids'],
                         similarity_spec=inputs['similarity_spec'])

    def similarity(self, model: Optional[nn.Module], dataset, names: List[str]) -> np.ndarray:
        """The similarity ``S`` of the configured sources.

        Args:
            model (nn.Module, optional): Needed by the ``features`` source.
            dataset: The UODBDataset.
            names (list[str]): Its dataset names.

        Returns:
            np.ndarray: ``K x K`` similarity.
        """
        cfg = self.config
        if cfg.matrix is not None:
            return cfg.matrix
        kwargs: Dict[str, Any] = dict(weights=cfg.sources)
        if 'prior' in cfg.sources:
            kwargs['prior'] = cfg.prior
        if 'labels' in cfg.sources:
            kwargs['labels'] = {n: list(dataset.dataset_classes[n]) for n in names}
        if 'features' in cfg.sources:
            if model is None:
                raise ValueError("GEM planning: the 'features' similarity source needs the "
                                 'model to probe its backbone')
            kwargs['features'] = probe_features(model, dataset, cfg.num_probe_images)
        return build_similarity(names, **kwargs)

    def reconcile(self, plan: GEMPlan, inputs: Dict[str, Any], source: str,
                  logger=None) -> Optional[GEMPlan]:
        """Check a restored or given plan against the data.

        Args:
            plan (GEMPlan): The plan (from a checkpoint or a plan file).
            inputs (dict): :meth:`inputs`.
            source (str): Where the plan came from, for messages.
            logger (optional): Where to warn.

        Returns:
            GEMPlan | None: The plan (its thresholds cut at the training
            images if it was made from counts only), or None to plan again
            (``on_mismatch='replan'``); a mismatch with ``'error'`` raises.
        """
        counts_only = all(v is None for v in plan.id_digests)
        problems = plan_mismatches(plan, inputs, with_ids=not counts_only, skip_unknown=False)
        if not problems and counts_only:
            if logger is not None:
                logger.info(f'GEM planning: {source} was made from image counts only; cutting '
                            'its routing thresholds at the training images (exact quotas)')
            return plan.with_image_ids(inputs['image_ids'])
        if not problems:
            return plan
        text = f'{source} does not fit the current config and data:\n  ' + '\n  '.join(problems)
        if self.config.on_mismatch == 'error':
            raise ValueError(f'GEMPlannerHook: {text}\nRefusing to train with it; set '
                             "GEMPlannerHook(on_mismatch='replan') to make a new plan.")
        if logger is not None:
            logger.warning(f'GEMPlannerHook: {text}\nMaking a new plan (on_mismatch=\'replan\').')
        return None

    def training_plan(self, dataloader, model: nn.Module, given: Optional[GEMPlan] = None,
                      source: str = 'the given plan', logger=None,
                      inputs: Optional[Dict[str, Any]] = None) -> GEMPlan:
        """The plan to train with, the same on every rank.

        Every rank checks ``given`` (a refusal stops all of them); without a
        fitting plan rank 0 plans; the plan is broadcast from rank 0 and every
        rank checks that the hashes agree.

        Args:
            dataloader: The training dataloader.
            model (nn.Module): The (unwrapped) detector.
            given (GEMPlan, optional): A plan restored or given with the model.
            source (str): Where ``given`` came from, for messages.
            logger (optional): Where to log.
            inputs (dict, optional): :meth:`inputs`, if computed.

        Returns:
            GEMPlan: The plan.
        """
        inputs = inputs or self.inputs(dataloader, model.num_experts)
        plan = None if given is None else self.reconcile(given, inputs, source, logger)
        if plan is None and is_main_process():
            plan = self.make_plan(dataloader, model, inputs=inputs, logger=logger)
        return broadcast_plan(plan)


def broadcast_plan(plan: Optional[GEMPlan]) -> GEMPlan:
    """Send rank 0's plan to every rank and check all hold the same.

    Args:
        plan (GEMPlan, optional): The plan on rank 0 (or on every rank).

    Returns:
        GEMPlan: Rank 0's plan.
    """
    payload = [plan.to_dict() if plan is not None else None]
    broadcast_object_list(payload, src=0)
    plan = GEMPlan.from_dict(payload[0])
    hashes = all_gather_object(plan.hash)
    if len(set(hashes)) != 1:
        raise RuntimeError(f'GEM planning: ranks disagree on the plan hash: {hashes} '
                           f'(this is rank {get_rank()})')
    return plan


def check_plan_fits(plan: GEMPlan, num_datasets: int, num_experts: int,
                    dataset_names: Optional[Sequence[str]], source: str) -> None:
    """Refuse a plan whose shape or datasets do not fit.

    Args:
        plan (GEMPlan): The plan.
        num_datasets (int): The model's datasets.
        num_experts (int): The model's experts.
        dataset_names (Sequence[str], optional): The training datasets; None
            skips the check.
        source (str): Where the plan came from, for messages.
    """
    want = (num_datasets, num_experts)
    got = tuple(plan.quota.shape)
    if got != want:
        raise ValueError(
            f'GEM plan from {source} has {got[0]} datasets x {got[1]} experts, but the '
            f'model has num_datasets={want[0]} and num_experts={want[1]}; it does not fit.')
    if dataset_names is not None and tuple(plan.dataset_names) != tuple(dataset_names):
        raise ValueError(
            f'GEM plan from {source} was made for datasets {list(plan.dataset_names)}, '
            f'but training uses {list(dataset_names)}; it does not fit.')


def write_plan_outputs(plan: GEMPlan, out_dir: str, visualizer=None, step: int = 0) -> None:
    """Write ``gem_plan.json`` and ``gem_plan.png`` (rank 0 only).

    Args:
        plan (GEMPlan): The plan.
        out_dir (str): The folder.
        visualizer (optional): MMEngine's Visualizer; gets the heat map and
            the table (so TensorBoard / W&B backends get them).
        step (int): The step recorded with the images.
    """
    if not is_main_process():
        return
    os.makedirs(out_dir, exist_ok=True)
    plan.save(osp.join(out_dir, 'gem_plan.json'))
    heatmap = plan.plot(osp.join(out_dir, 'gem_plan.png'))
    if visualizer is not None:
        add_plan_to_visualizer(visualizer, plan, heatmap, step=step)
