# Copyright (c) mmgem contributors. All rights reserved.
"""GEMPlannerHook: plans the dataset-to-expert map before training starts."""
import math
import os
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from mmdet.registry import HOOKS
from mmengine.dist import all_gather_object, broadcast_object_list, get_rank, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from mmgem.datasets import expected_images_per_dataset, find_uodb_dataset
from mmgem.planner import (
    GEMPlan,
    PlanError,
    build_similarity,
    check_similarity,
    image_buckets,
    image_id_digest,
    make_plan,
)
from mmgem.planner.compiler import ROUNDINGS
from mmgem.planner.lp import check_solver_name, installed_solvers
from mmgem.planner.planner import check_loads
from mmgem.planner.similarity import SIMILARITY_SOURCES
from mmgem.visualization import add_plan_to_visualizer

CKPT_KEY = 'gem_plan'
ON_MISMATCH = ('error', 'replan')


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) else model


def training_image_ids(dataset) -> Dict[str, List[Any]]:
    """The image ids of every dataset of a UODBDataset, as the model sees them.

    The id of an image is its data info's ``img_id`` (``img_path`` when it
    has none), the same value :func:`mmgem.models.detectors.routing_info.
    image_buckets_from_samples` hashes at train and test time.

    Args:
        dataset: A :class:`UODBDataset` (or a wrapper of one).

    Returns:
        dict[str, list]: Per dataset name, the ids of its samples (after
        ``select``, ``dataset_indices``, ``indices`` and filtering).
    """
    uodb = find_uodb_dataset(dataset)
    names = uodb.dataset_names
    ids: Dict[str, List[Any]] = {n: [] for n in names}
    for idx, d in enumerate(np.asarray(uodb.sample_dataset_ids).tolist()):
        info = uodb.get_data_info(idx)
        ids[names[d]].append(info.get('img_id', info.get('img_path')))
    return ids


#: the largest share by which a sampler's round-up padding can scale an
#: epoch (``ceil(E / W) * W / E - 1`` is under 0.1 for E >= 10 W images)
PADDING_TOLERANCE = 0.1


def same_mix(plan_loads: Sequence[float], loads: Sequence[float],
             tolerance: float = PADDING_TOLERANCE) -> bool:
    """Whether two load vectors differ only by a sampler's padding.

    A sampler that pads every epoch to a multiple of the world size scales
    every dataset's load by one factor (``total_size / epoch_length``), which
    changes with the number of GPUs: a plan made by ``gem_plan.py`` in one
    process, or a run resumed on another number of GPUs, sees loads a few
    images per rank apart. Such loads are the same data mix (the thresholds
    are cut at the image ids, not at the padded counts). A change of any one
    dataset's share (a cut, other sampler ratios) or of the epoch's size
    beyond padding (twice the images, another ``epoch_length``) is not.

    Args:
        plan_loads (Sequence[float]): The plan's loads.
        loads (Sequence[float]): The current loads.
        tolerance (float): Largest ``|factor - 1|`` taken for padding.
            Defaults to :data:`PADDING_TOLERANCE`.

    Returns:
        bool: True if ``loads == factor * plan_loads`` for one factor with
        ``|factor - 1| <= tolerance``.
    """
    a = np.asarray(plan_loads, dtype=np.float64)
    b = np.asarray(loads, dtype=np.float64)
    if a.shape != b.shape or not np.all(a > 0) or not np.all(b > 0):
        return False
    ratio = b / a
    return bool(np.all(np.abs(ratio - ratio[0]) <= 1e-9 * ratio[0])
                and abs(ratio[0] - 1.0) <= tolerance)


@HOOKS.register_module()
class GEMPlannerHook(Hook):
    """Solve GEM's global expert plan before the first training iteration.

    Before training (``before_train``, after MMEngine has loaded or resumed a
    checkpoint) the hook:

    1. reads each dataset's load ``n_d``: the images per epoch that the
       training sampler is expected to draw from it (``expected_images_per_
       dataset``; plain dataset lengths for mmengine's default samplers), and
       the ids of its training images;
    2. builds the similarity ``S`` from the configured sources (a ``prior``
       of groups, ``labels`` Jaccard overlap, ``features`` probed with the
       model in eval mode without gradients, or a given ``matrix``);
    3. solves the LP and rounds it (:func:`mmgem.planner.make_plan`) on rank
       0, cutting every dataset's routing thresholds at its training images
       so that the realised per-expert loads equal the quota (and so respect
       the capacity), broadcasts the plan to all ranks, and checks on every
       rank that the plan's content hash agrees;
    4. installs the plan (quota table, routing thresholds, label offsets) in
       the model's buffers (``model.install_plan``), so checkpoints carry it;
    5. writes ``gem_plan.json`` and ``gem_plan.png`` to the work dir, logs
       the plan table, and sends the heat map and the table (as images
       ``gem_plan`` and ``gem_plan_table``) to the runner's Visualizer, so
       every vis backend (local files, TensorBoard, W&B) gets them.

    Plans check themselves. When the model already holds a plan (restored by
    ``resume`` or ``load_from``) or ``plan_file`` gives one, the hook compares
    the plan's datasets, loads, number of experts, capacity factor, beta,
    similarity sources and training image ids with the current config and
    data (loads scaled by the round-up padding of another world size are
    the same data mix, see :func:`same_mix`); a mismatch is
    refused with the differing fields named, or, with
    ``on_mismatch='replan'``, a new plan is made. A plan file without a valid
    hash is refused unless ``force_plan=True``. A checkpoint whose plan does
    not fit the model (datasets x experts) or the training datasets is
    refused in ``after_load_checkpoint``, before MMEngine copies its weights.
    The arguments are validated when the hook is built, and the hook's
    ``num_experts`` against the model's in ``before_run``, before any data is
    read.

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
        rounding (str): ``'auto'``, ``'heuristic'`` or ``'exact'`` (see
            :func:`mmgem.planner.make_plan`). Defaults to ``'auto'``.
        plan_file (str, optional): A plan JSON written earlier (for example
            by ``tools/analysis_tools/gem_plan.py --config``) to install
            instead of planning. It must fit the config and data as above; a
            plan made from counts only (no image ids) gets its thresholds cut
            at the training images.
        force_plan (bool): Accept a ``plan_file`` without a valid hash (edited
            on purpose), after re-validating its quota, capacity and cost.
            Defaults to False.
        on_mismatch (str): What a restored plan or ``plan_file`` that does
            not fit the current config and data does: ``'error'`` (default)
            or ``'replan'`` (plan again and install the new plan).
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
                 plan_file: Optional[str] = None,
                 force_plan: bool = False,
                 on_mismatch: str = 'error') -> None:
        similarity = dict(sources=dict(labels=1.0)) if similarity is None else dict(similarity)
        self._validate(num_experts, capacity_factor, beta, similarity, num_probe_images, solver,
                       fallback_solvers, rounding, on_mismatch)
        self.num_experts = None if num_experts is None else int(num_experts)
        self.capacity_factor = None if capacity_factor is None else float(capacity_factor)
        self.beta = float(beta)
        self.matrix = similarity.get('matrix')
        self.sources = {} if self.matrix is not None else {
            k: float(v) for k, v in dict(similarity.get('sources') or {}).items()}
        self.prior = similarity.get('prior') if 'prior' in self.sources else None
        self.num_probe_images = int(num_probe_images)
        self.solver = solver
        self.fallback_solvers = fallback_solvers
        self.rounding = rounding
        self.plan_file = plan_file
        self.force_plan = bool(force_plan)
        self.on_mismatch = on_mismatch
        self.file_plan: Optional[GEMPlan] = None
        if plan_file is not None:
            try:
                self.file_plan = GEMPlan.load(plan_file, force=self.force_plan)
            except PlanError as err:  # a ValueError too
                raise PlanError(f'GEMPlannerHook: plan_file={plan_file!r}: {err}') from err
        self.plan: Optional[GEMPlan] = None

    @staticmethod
    def _validate(num_experts, capacity_factor, beta, similarity, num_probe_images, solver,
                  fallback_solvers, rounding, on_mismatch) -> None:
        """Check every argument, naming the setting at fault."""

        def bad(setting: str, why: str) -> ValueError:
            return ValueError(f'GEMPlannerHook({setting}): {why}')

        if num_experts is not None and (isinstance(num_experts, bool) or not isinstance(
                num_experts, (int, np.integer)) or num_experts < 1):
            raise bad(f'num_experts={num_experts!r}', 'must be an integer >= 1 or None (the '
                      "model's)")
        if capacity_factor is not None:
            if isinstance(capacity_factor, bool) or not isinstance(
                    capacity_factor, (int, float)) or not math.isfinite(capacity_factor) \
                    or capacity_factor < 1:
                raise bad(f'capacity_factor={capacity_factor!r}',
                          'must be a finite number >= 1, or None for no capacity limit')
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta <= 1:
            raise bad(f'beta={beta!r}', 'must be a number in [0, 1]')
        unknown = set(similarity) - {'sources', 'prior', 'matrix'}
        if unknown:
            raise bad(f'similarity={similarity!r}', f'unknown keys {sorted(unknown)}; expected '
                      "'sources', 'prior' or 'matrix'")
        if similarity.get('matrix') is not None:
            try:
                matrix = np.asarray(similarity['matrix'], dtype=np.float64)
                check_similarity(matrix, matrix.shape[0] if matrix.ndim else 0)
            except (PlanError, ValueError, TypeError) as err:
                raise bad('similarity.matrix', str(err)) from err
        else:
            sources = dict(similarity.get('sources') or {})
            if not sources:
                raise bad(f'similarity={similarity!r}', "needs 'sources' (a dict of weights) "
                          "or a 'matrix'")
            unknown = set(sources) - set(SIMILARITY_SOURCES)
            if unknown:
                raise bad(f'similarity.sources={sources!r}', f'unknown sources '
                          f'{sorted(unknown)}; expected {list(SIMILARITY_SOURCES)}')
            for key, weight in sources.items():
                if isinstance(weight, bool) or not isinstance(weight, (int, float)) or \
                        not math.isfinite(weight) or weight < 0:
                    raise bad(f'similarity.sources.{key}={weight!r}',
                              'a weight must be a finite number >= 0')
            if sum(sources.values()) <= 0:
                raise bad(f'similarity.sources={sources!r}', 'the weights sum to 0')
            if 'prior' in sources:
                prior = similarity.get('prior')
                if not prior or isinstance(prior, str) or not all(
                        isinstance(g, (list, tuple)) and all(isinstance(n, str) for n in g)
                        for g in prior):
                    raise bad(f'similarity.prior={prior!r}', "the 'prior' source needs a list "
                              'of groups (lists) of dataset names')
        if isinstance(num_probe_images, bool) or not isinstance(num_probe_images, int) or \
                num_probe_images < 1:
            raise bad(f'num_probe_images={num_probe_images!r}', 'must be an integer >= 1')
        try:
            check_solver_name(solver)
            for name in fallback_solvers or []:
                check_solver_name(name)
        except PlanError as err:
            raise bad(f'solver={solver!r}, fallback_solvers={fallback_solvers!r}',
                      str(err)) from err
        if not fallback_solvers and solver.upper() not in installed_solvers():
            raise bad(f'solver={solver!r}', f'not installed (installed: {installed_solvers()}); '
                      'pick another or give fallback_solvers')
        if rounding not in ROUNDINGS:
            raise bad(f'rounding={rounding!r}', f'must be one of {list(ROUNDINGS)}')
        if on_mismatch not in ON_MISMATCH:
            raise bad(f'on_mismatch={on_mismatch!r}', f'must be one of {list(ON_MISMATCH)}')

    def similarity_spec(self) -> Dict:
        """How the hook builds S (recorded in the plan, compared on resume).

        Returns:
            dict: ``{'matrix': [[...]]}`` or ``{'sources': {...}, 'prior': ...}``.
        """
        if self.matrix is not None:
            return dict(matrix=np.asarray(self.matrix, dtype=np.float64).tolist())
        return dict(sources=dict(sorted(self.sources.items())),
                    prior=None if self.prior is None else [list(g) for g in self.prior])

    # ------------------------------------------------------------------ #
    # checkpoints
    # ------------------------------------------------------------------ #
    def before_run(self, runner: Runner) -> None:
        """Check the hook's settings against the model before any data is read."""
        model = _unwrap(runner.model)
        if not hasattr(model, 'install_plan'):
            raise TypeError(f'GEMPlannerHook needs a model with install_plan() (GEMDINO), '
                            f'got {type(model).__name__}')
        if self.num_experts is not None and self.num_experts != model.num_experts:
            raise ValueError(f'GEMPlannerHook(num_experts={self.num_experts}) does not match the '
                             f"model's num_experts={model.num_experts}; set one of them so they "
                             'agree (or leave the hook\'s num_experts unset)')
        if self.file_plan is not None:
            self._check_fits_model(self.file_plan, model, source=f'plan_file={self.plan_file!r}')

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
        plan = GEMPlan.from_dict(checkpoint[CKPT_KEY], source='checkpoint plan')
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
        """Plan (or restore and check the plan) and install it in the model."""
        model = _unwrap(runner.model)
        if not hasattr(model, 'install_plan'):
            raise TypeError(f'GEMPlannerHook needs a model with install_plan() (GEMDINO), '
                            f'got {type(model).__name__}')
        dataset = find_uodb_dataset(runner.train_dataloader.dataset)
        names = tuple(dataset.dataset_names)
        current = self.current_inputs(runner.train_dataloader, model)

        if model.has_plan():
            if self.plan is None or self.plan.hash != model.installed_plan_hash():
                raise RuntimeError(
                    'The model holds a GEM plan (hash '
                    f'{model.installed_plan_hash()[:12]}) but the checkpoint it came from '
                    f"has no matching '{CKPT_KEY}' entry; refusing to train with a plan "
                    'that cannot be checked. Start from a checkpoint saved with '
                    'GEMPlannerHook, or from one without a plan.')
            self._check_fits_datasets(self.plan, names, source='checkpoint')
            problems = self.mismatches(self.plan, current)
            if self.file_plan is not None and self.file_plan.quota.tolist() != \
                    self.plan.quota.tolist():
                problems.append(f'plan_file: {self.plan_file} holds plan '
                                f'{self.file_plan.hash[:12]}, the checkpoint plan '
                                f'{self.plan.hash[:12]} with another quota table')
            if not problems:
                runner.logger.info(f'GEMPlannerHook: re-using the plan {self.plan.hash[:12]} '
                                   'restored from the checkpoint (no re-planning).')
                self._write_outputs(runner, self.plan)
                return
            self._refuse_or_replan(runner, 'the plan restored from the checkpoint', problems)

        # every rank checks plan_file (a refusal must stop all of them); rank 0 plans
        plan = None if self.file_plan is None else self._file_plan(runner, current)
        if plan is None and is_main_process():
            plan = self.plan_for(runner.train_dataloader, model, current=current,
                                 logger=runner.logger)
        plan = self._broadcast(plan)
        self._check_fits_model(plan, model, source='planner')
        self._check_fits_datasets(plan, names, source='planner')
        model.install_plan(plan.quota, np.asarray(dataset.label_offsets), plan.hash,
                           dataset_names=plan.dataset_names, thresholds=plan.thresholds)
        self.plan = plan
        realised = plan.realised_counts(current['image_ids']).sum(0)
        runner.logger.info(f'GEMPlannerHook: installed GEM plan {plan.hash[:12]}\n{plan}\n'
                           f'realised training images per expert: {realised.tolist()}')
        self._write_outputs(runner, plan)

    def _refuse_or_replan(self, runner: Runner, what: str, problems: List[str]) -> None:
        text = f'{what} does not fit the current config and data:\n  ' + '\n  '.join(problems)
        if self.on_mismatch == 'error':
            raise ValueError(f'GEMPlannerHook: {text}\nRefusing to train with it; set '
                             "GEMPlannerHook(on_mismatch='replan') to make a new plan.")
        runner.logger.warning(f'GEMPlannerHook: {text}\nMaking a new plan '
                              "(on_mismatch='replan').")

    def current_inputs(self, dataloader, model: Optional[nn.Module] = None,
                       num_experts: Optional[int] = None) -> Dict:
        """What a plan for this config and data must be made of.

        Args:
            dataloader: The training dataloader (its sampler gives the loads).
            model (nn.Module, optional): The detector; gives ``num_experts``
                when neither the hook nor ``num_experts`` sets it.
            num_experts (int, optional): The model's number of experts, when
                the model is not built.

        Returns:
            dict: ``dataset_names``, ``loads``, ``images``, ``image_ids``,
            ``id_digests``, ``num_experts``, ``capacity_factor``, ``beta``,
            ``similarity_spec``.
        """
        dataset = find_uodb_dataset(dataloader.dataset)
        names = list(dataset.dataset_names)
        loads = expected_images_per_dataset(dataloader, dataset)
        ids = training_image_ids(dataset)
        num_experts = self.num_experts or num_experts or (
            None if model is None else model.num_experts)
        return dict(dataset_names=names, loads=loads, images=check_loads(names, loads),
                    image_ids=ids,
                    id_digests=[image_id_digest(image_buckets(n, ids[n])) for n in names],
                    num_experts=num_experts, capacity_factor=self.capacity_factor,
                    beta=self.beta, similarity_spec=self.similarity_spec())

    @staticmethod
    def mismatches(plan: GEMPlan, current: Dict, with_ids: bool = True,
                   skip_unknown: bool = True) -> List[str]:
        """The fields of ``plan`` that differ from :meth:`current_inputs`.

        Args:
            plan (GEMPlan): A restored or given plan.
            current (dict): :meth:`current_inputs`.
            with_ids (bool): Compare the training image-id digests too.
                Defaults to True.
            skip_unknown (bool): Leave out the fields that are None in
                ``current``. Defaults to True.

        Returns:
            list[str]: One line per differing field.
        """
        keys = ('dataset_names', 'images', 'num_experts', 'capacity_factor', 'beta',
                'similarity_spec') + (('id_digests', ) if with_ids else ())
        fields = {k: current[k] for k in keys if not skip_unknown or current[k] is not None}
        if same_mix(plan.loads, current['loads']):
            fields['images'] = plan.images  # the same mix (e.g. another world size's padding)
        return plan.mismatches(**fields)

    def _file_plan(self, runner: Runner, current: Dict) -> Optional[GEMPlan]:
        """The ``plan_file`` plan if it fits the config and data (every rank).

        Returns:
            GEMPlan | None: The plan (its thresholds cut at the training images
            if it was made from counts only), or None to re-plan
            (``on_mismatch='replan'``); a mismatch with ``'error'`` raises.
        """
        plan = self.file_plan
        problems = self.mismatches(plan, current, with_ids=False, skip_unknown=False)
        if not problems and all(v is None for v in plan.id_digests):
            runner.logger.info(f'GEMPlannerHook: {self.plan_file} was made from image counts '
                               'only; cutting its routing thresholds at the training images '
                               '(exact quotas)')
            return plan.with_image_ids(current['image_ids'])
        problems = problems or self.mismatches(plan, current)
        if not problems:
            return plan
        self._refuse_or_replan(runner, f'plan_file={self.plan_file!r}', problems)
        return None

    def plan_for(self, dataloader, model: Optional[nn.Module] = None,
                 num_experts: Optional[int] = None, current: Optional[Dict] = None,
                 logger=None) -> GEMPlan:
        """Make the plan training with this hook makes for these data.

        ``tools/analysis_tools/gem_plan.py --config`` calls it too, so an
        offline plan is the training plan (same hash).

        Args:
            dataloader: The training dataloader.
            model (nn.Module, optional): The detector, needed for the
                ``features`` similarity source (probed in eval mode).
            num_experts (int, optional): The model's ``num_experts`` when the
                hook does not set it and ``model`` is not given.
            current (dict, optional): :meth:`current_inputs`, if computed.
            logger (optional): Where to log the loads.

        Returns:
            GEMPlan: The plan, thresholds cut at the training images.
        """
        current = current or self.current_inputs(dataloader, model, num_experts)
        dataset = find_uodb_dataset(dataloader.dataset)
        names = current['dataset_names']
        if current['num_experts'] is None:
            raise ValueError('GEMPlannerHook.plan_for needs num_experts: from the hook, '
                             'the model or the argument')
        similarity = self._similarity(model, dataset, names)
        if logger is not None:
            logger.info('GEMPlannerHook: planning '
                        + ', '.join(f'{n}={load:.1f}' for n, load in zip(names, current['loads']))
                        + f' images/epoch on {current["num_experts"]} experts')
        return make_plan(
            names,
            current['loads'],
            similarity,
            num_experts=current['num_experts'],
            capacity_factor=self.capacity_factor,
            beta=self.beta,
            solver=self.solver,
            fallback_solvers=self.fallback_solvers,
            rounding=self.rounding,
            image_ids=current['image_ids'],
            similarity_spec=current['similarity_spec'])

    def _similarity(self, model: Optional[nn.Module], dataset, names: List[str]) -> np.ndarray:
        if self.matrix is not None:
            return np.asarray(self.matrix, dtype=np.float64)
        kwargs = dict(weights=self.sources)
        if 'prior' in self.sources:
            kwargs['prior'] = self.prior
        if 'labels' in self.sources:
            kwargs['labels'] = {n: list(dataset.dataset_classes[n]) for n in names}
        if 'features' in self.sources:
            if model is None:
                raise ValueError("GEMPlannerHook: the 'features' similarity source needs the "
                                 'model to probe its backbone')
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

