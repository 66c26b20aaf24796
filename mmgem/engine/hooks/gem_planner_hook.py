# Copyright (c) mmgem contributors. All rights reserved.
"""GEMPlannerHook: plans the dataset-to-expert map before training starts."""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from mmdet.registry import HOOKS
from mmengine.dist import all_gather_object, broadcast_object_list, get_rank, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from mmgem.datasets import expected_images_per_dataset, find_uodb_dataset
from mmgem.planner import GEMPlan, build_similarity, make_plan
from mmgem.visualization import add_plan_to_visualizer

CKPT_KEY = 'gem_plan'


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) else model


@HOOKS.register_module()
class GEMPlannerHook(Hook):
    """Solve GEM's global expert plan before the first training iteration.

    Before training (``before_train``, after MMEngine has loaded or resumed a
    checkpoint) the hook:

    1. reads each dataset's load ``n_d``: the images per epoch that the
       training sampler is expected to draw from it (``expected_images_per_
       dataset``; plain dataset lengths for mmengine's default samplers);
    2. builds the similarity ``S`` from the configured sources (a ``prior``
       of groups, ``labels`` Jaccard overlap, ``features`` probed with the
       model in eval mode without gradients, or a given ``matrix``);
    3. solves the LP and rounds it (:func:`mmgem.planner.make_plan`) on rank
       0, broadcasts the plan to all ranks, and checks on every rank that the
       plan's content hash agrees;
    4. installs the plan's quota table and the dataset label offsets as
       buffers in every MoE layer (``model.install_plan``), so checkpoints
       carry the plan;
    5. writes ``gem_plan.json`` and ``gem_plan.png`` to the work dir, logs
       the plan table, and sends the heat map and the table (as images
       ``gem_plan`` and ``gem_plan_table``) to the runner's Visualizer, so
       every vis backend (local files, TensorBoard, W&B) gets them.

    When the model already holds a plan (restored by ``resume`` or
    ``load_from``), the hook re-uses it instead of planning again. A
    checkpoint whose plan does not fit the model (datasets x experts) or the
    training datasets is refused with an error, in ``after_load_checkpoint``
    before MMEngine copies its weights.

    Args:
        num_experts (int, optional): Experts per MoE layer. Defaults to the
            model's ``num_experts``; if given, it must agree with the model.
        capacity_factor (float, optional): Expert capacity is
            ``capacity_factor * N / M`` images per epoch. ``None`` disables
            the capacity limit. Defaults to 1.25.
        beta (float): Fairness exponent of the dataset weights
            ``n_d ** beta``; 0 weighs datasets equally. Defaults to 0.
        similarity (dict): How to build ``S``. Keys: ``sources`` (dict
            mapping ``'prior'``, ``'labels'`` or ``'features'`` to a weight),
            ``prior`` (list of groups of dataset names), ``matrix`` (a K x K
            nested list used as ``S`` directly; then ``sources`` is ignored).
            Defaults to ``dict(sources=dict(labels=1.0))``.
        num_probe_images (int): Images per dataset whose mean-pooled
            backbone features form the ``features`` source. Defaults to 8.
        solver (str): CVXPY solver of the LP. Defaults to ``'ECOS'``.
        fallback_solvers (Sequence[str], optional): Solvers tried in order if
            ``solver`` is not installed. Defaults to None (no fallback).
        plan_file (str, optional): A plan JSON written earlier (for example
            by ``tools/analysis_tools/gem_plan.py``) to install instead of
            planning. Its datasets must match the training datasets.
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
                 plan_file: Optional[str] = None) -> None:
        similarity = dict(sources=dict(labels=1.0)) if similarity is None else dict(similarity)
        unknown = set(similarity) - {'sources', 'prior', 'matrix'}
        if unknown:
            raise ValueError(f'GEMPlannerHook: unknown similarity keys {sorted(unknown)}; '
                             "expected 'sources', 'prior' or 'matrix'")
        sources = dict(similarity.get('sources') or {})
        bad = set(sources) - {'prior', 'labels', 'features'}
        if bad:
            raise ValueError(f'GEMPlannerHook: unknown similarity sources {sorted(bad)}; '
                             "expected 'prior', 'labels' or 'features'")
        if 'prior' in sources and not similarity.get('prior'):
            raise ValueError("GEMPlannerHook: similarity source 'prior' needs "
                             'similarity.prior, a list of groups of dataset names')
        if num_probe_images < 1:
            raise ValueError(f'GEMPlannerHook: num_probe_images={num_probe_images} must be >= 1')
        self.num_experts = num_experts
        self.capacity_factor = capacity_factor
        self.beta = beta
        self.sources = sources
        self.prior = similarity.get('prior')
        self.matrix = similarity.get('matrix')
        self.num_probe_images = num_probe_images
        self.solver = solver
        self.fallback_solvers = fallback_solvers
        self.plan_file = plan_file
        self.plan: Optional[GEMPlan] = None

    # ------------------------------------------------------------------ #
    # checkpoints
    # ------------------------------------------------------------------ #
    def before_save_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        """Store the plan (as a JSON-safe dict) in the checkpoint."""
        if self.plan is not None:
            checkpoint[CKPT_KEY] = self.plan.to_dict()

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        """Check a checkpoint's plan against the model and datasets.

        Called by MMEngine before it copies the checkpoint's weights, so a
        plan that does not fit is refused before anything is overwritten.
        """
        if CKPT_KEY not in checkpoint:
            return
        plan = GEMPlan.from_dict(checkpoint[CKPT_KEY])
        model = _unwrap(runner.model)
        self._check_fits_model(plan, model, source='checkpoint')
        names = self._runner_dataset_names(runner)
        if names is not None:
            self._check_fits_datasets(plan, names, source='checkpoint')
        self.plan = plan

    # ------------------------------------------------------------------ #
    # planning
    # ------------------------------------------------------------------ #
    def before_train(self, runner: Runner) -> None:
        """Plan (or restore the plan) and install it in the model."""
        model = _unwrap(runner.model)
        if not hasattr(model, 'install_plan'):
            raise TypeError(f'GEMPlannerHook needs a model with install_plan() (GEMDINO), '
                            f'got {type(model).__name__}')
        dataset = find_uodb_dataset(runner.train_dataloader.dataset)
        names = tuple(dataset.dataset_names)

        if model.has_plan():
            if self.plan is None or self.plan.hash != model.installed_plan_hash():
                raise RuntimeError(
                    'The model holds a GEM plan (hash '
                    f'{model.installed_plan_hash()[:12]}) but the checkpoint it came from '
                    f"has no matching '{CKPT_KEY}' entry; refusing to train with a plan "
                    'that cannot be checked. Start from a checkpoint saved with '
                    'GEMPlannerHook, or from one without a plan.')
            runner.logger.info(f'GEMPlannerHook: re-using the plan {self.plan.hash[:12]} '
                               'restored from the checkpoint (no re-planning).')
            self._check_fits_datasets(self.plan, names, source='checkpoint')
            self._write_outputs(runner, self.plan)
            return

        plan = None
        if is_main_process():
            plan = self._make_plan(runner, model, dataset)
        plan = self._broadcast(plan)
        self._check_fits_model(plan, model, source='planner')
        self._check_fits_datasets(plan, names, source='planner')
        model.install_plan(plan.quota, np.asarray(dataset.label_offsets), plan.hash,
                          dataset_names=plan.dataset_names)
        self.plan = plan
        runner.logger.info(f'GEMPlannerHook: installed GEM plan {plan.hash[:12]}\n{plan}')
        self._write_outputs(runner, plan)

    def _make_plan(self, runner: Runner, model: nn.Module, dataset) -> GEMPlan:
        names = list(dataset.dataset_names)
        if self.plan_file is not None:
            plan = GEMPlan.load(self.plan_file)
            self._check_fits_datasets(plan, tuple(names), source=self.plan_file)
            return plan
        loads = expected_images_per_dataset(runner.train_dataloader, dataset)
        similarity = self._similarity(runner, model, dataset, names)
        num_experts = self.num_experts or model.num_experts
        runner.logger.info(
            'GEMPlannerHook: planning '
            + ', '.join(f'{n}={load:.1f}' for n, load in zip(names, loads))
            + f' images/epoch on {num_experts} experts')
        return make_plan(
            names,
            loads,
            similarity,
            num_experts=num_experts,
            capacity_factor=self.capacity_factor,
            beta=self.beta,
            solver=self.solver,
            fallback_solvers=self.fallback_solvers)

    def _similarity(self, runner: Runner, model: nn.Module, dataset,
                    names: List[str]) -> np.ndarray:
        if self.matrix is not None:
            return np.asarray(self.matrix, dtype=np.float64)
        kwargs = dict(weights=self.sources)
        if 'prior' in self.sources:
            kwargs['prior'] = self.prior
        if 'labels' in self.sources:
            kwargs['labels'] = {n: list(dataset.dataset_classes[n]) for n in names}
        if 'features' in self.sources:
            kwargs['features'] = self.probe_features(model, dataset)
        return build_similarity(names, **kwargs)

    @torch.no_grad()
    def probe_features(self, model: nn.Module, dataset) -> Dict[str, np.ndarray]:
        """Mean-pooled backbone features of the first images of each dataset.

        The model runs in eval mode without gradients; its training mode is
        restored afterwards.

        Args:
            model (nn.Module): The detector (unwrapped), with
                ``data_preprocessor`` and ``extract_feat``.
            dataset: The UODBDataset.

        Returns:
            dict[str, np.ndarray]: Per dataset, the mean over its probe
            images of the global-average-pooled last feature level.
        """
        was_training = model.training
        model.eval()
        sample_ids = np.asarray(dataset.sample_dataset_ids)
        features = {}
        try:
            for d, name in enumerate(dataset.dataset_names):
                vectors = []
                for idx in np.flatnonzero(sample_ids == d)[:self.num_probe_images]:
                    idx = int(idx)
                    data = model.data_preprocessor(
                        {k: [v] for k, v in dataset[idx].items()}, False)
                    feats = model.extract_feat(data['inputs'])
                    vectors.append(feats[-1].mean(dim=(2, 3)).flatten().double().cpu())
                features[name] = torch.stack(vectors).mean(0).numpy()
        finally:
            model.train(was_training)
        return features

    # ------------------------------------------------------------------ #
    # helpers
    # ------------------------------------------------------------------ #
    @staticmethod
    def _broadcast(plan: Optional[GEMPlan]) -> GEMPlan:
        """Send rank 0's plan to every rank and check all hold the same."""
        payload = [plan.to_dict() if plan is not None else None]
        broadcast_object_list(payload, src=0)
        plan = GEMPlan.from_dict(payload[0])
        hashes = all_gather_object(plan.hash)
        if len(set(hashes)) != 1:
            raise RuntimeError(f'GEMPlannerHook: ranks disagree on the plan hash: {hashes} '
                               f'(this is rank {get_rank()})')
        return plan

    @staticmethod
    def _runner_dataset_names(runner: Runner) -> Optional[tuple]:
        """Dataset names of the first built loop's dataset, if any is built."""
        for attr in ('_train_loop', '_val_loop', '_test_loop'):
            loader = getattr(getattr(runner, attr, None), 'dataloader', None)
            if loader is None:
                continue
            try:
                return tuple(find_uodb_dataset(loader.dataset).dataset_names)
            except TypeError:
                return None  # not a UODB loop: nothing to check against
        return None

    @staticmethod
    def _check_fits_model(plan: GEMPlan, model: nn.Module, source: str) -> None:
        want = (model.num_datasets, model.num_experts)
        got = tuple(plan.quota.shape)
        if got != want:
            raise ValueError(
                f'GEM plan from {source} has {got[0]} datasets x {got[1]} experts, but the '
                f'model has num_datasets={want[0]} and num_experts={want[1]}; it does not fit.')

    @staticmethod
    def _check_fits_datasets(plan: GEMPlan, names: tuple, source: str) -> None:
        if tuple(plan.dataset_names) != tuple(names):
            raise ValueError(
                f'GEM plan from {source} was made for datasets {list(plan.dataset_names)}, '
                f'but training uses {list(names)}; it does not fit.')

    @staticmethod
    def _write_outputs(runner: Runner, plan: GEMPlan) -> None:
        if not is_main_process():
            return
        os.makedirs(runner.work_dir, exist_ok=True)
        plan.save(osp.join(runner.work_dir, 'gem_plan.json'))
        heatmap = plan.plot(osp.join(runner.work_dir, 'gem_plan.png'))
        # through MMEngine's Visualizer, so TensorBoard / W&B backends get it
        add_plan_to_visualizer(runner.visualizer, plan, heatmap, step=runner.iter)

