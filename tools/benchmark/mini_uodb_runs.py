# Copyright (c) mmgem contributors. All rights reserved.
"""Train-and-evaluate cells of the mini-UODB benchmarks, saved and resumed.

The machinery behind ``mini_uodb_table.py``, ``mini_uodb_curve.py``,
``mini_uodb_few_shot.py`` and ``mini_uodb_ablation.py`` (one concept each):

- a *job* trains one tiny config (``configs/gem/*-tiny_r18_mini-uodb*.py``)
  for a budget and seed on the generated mini-UODB, then evaluates the
  checkpoint under one or more test configs; every evaluation is a *cell*,
  saved as JSON under the results folder the moment it finishes
  (:class:`tools.benchmark.cell_store.CellStore`, atomic writes);
- a cell already saved with the same fingerprint (config, data, budget,
  seed) is skipped, so an interrupted run resumes where it stopped; a job
  whose cells are all saved does not train at all; one whose training
  finished but whose evaluations did not re-uses its checkpoint;
- a cell another benchmark already saved with the same fingerprint (the
  same training and test, for example the few-shot benchmark's ``all``
  shots or the ablation's base variant, which are table cells) is copied
  from that benchmark's folder instead of being trained again
  (``--reuse``; by default the folders beside the results folder);
- a cell may refit the domain classifier of the job's checkpoint before its
  test (its ``refit`` spec, :func:`refit_classifier`: the classifier alone,
  on frozen features; the spec is part of the cell's fingerprint, not of the
  training's, so the refitted row shares its method's training);
- jobs run one after another in this process, or ``--parallel N`` at a time
  as subprocesses with ``--threads`` torch threads each;
- a job may start from another job's checkpoint (``start_from``: its
  weights loaded, or a dense model upcycled into an MoE one); its
  fingerprint then includes the other job's, and a job whose checkpoint a
  later job needs (``checkpoint_needed``) trains again if the checkpoint is
  gone, even when its own cells are saved.

Run a job file directly (what ``--parallel`` does)::

    python tools/benchmark/mini_uodb_runs.py --run-job JOB.json --threads 1
"""
import argparse
import copy
import gc
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import time
import traceback
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
if not __package__:  # run by path: make the `tools` package importable
    from mmgem.utils.tool_scripts import import_tools_beside
    import_tools_beside(__file__)

import mmgem  # noqa: E402,F401  (registers mmgem's modules)
from mmgem.datasets import (  # noqa: E402
    MINI_UODB_DATASETS,
    MINI_UODB_DISPLAY_NAMES,
    MINI_UODB_SIZES,
    find_uodb_dataset,
)
from mmgem.datasets.mini_uodb_v2_meta import (  # noqa: E402
    MINI_UODB_V2_CONFLICT_PAIR,
    MINI_UODB_V2_DATASETS,
    MINI_UODB_V2_DISPLAY_NAMES,
    MINI_UODB_V2_SIZES,
)
from mmgem.engine.runner import build_runner  # noqa: E402
from mmgem.models.layers.domain_classifier import LOSS_BALANCES  # noqa: E402
from mmgem.models.utils.routing_stats import dataset_expert_counts  # noqa: E402
from mmgem.planner import GEMPlan  # noqa: E402
from mmgem.utils import atomic_write  # noqa: E402
from mmgem.utils.choices import check_choice  # noqa: E402
from tools.analysis_tools import fit_domain_classifier  # noqa: E402
from tools.benchmark import mini_uodb_adapt  # noqa: E402
from tools.benchmark.cell_store import CellStore, fingerprint  # noqa: E402
from tools.misc import make_mini_uodb  # noqa: E402

#: method -> (row title, config stem, config suffix[, test overrides]); the
#: config is ``configs/gem/<stem>-tiny_r18_mini-uodb<version suffix><suffix>.py``
#: with the ``Config.merge_from_dict`` overrides (test keys only) applied.
#: Every method has a dataset-known row and a dataset-unknown row (labels in
#: the unified space by class name, scored with UODBMetric's name mapping);
#: the rows of one method share its training run. GEM's two further rows
#: complete its 2 x 2 table {true, predicted} routing x {dataset, name} labels.
UNIFIED_LABELS = {'model.test_label_space': 'unified',
                  'val_evaluator.label_mapping': 'name',
                  'test_evaluator.label_mapping': 'name'}
#: the ``*_dataset-unknown.py`` configs' change, for rows without such a config
UNKNOWN = {'model.test_dataset_known': False,
           'val_evaluator.label_mapping': 'name',
           'test_evaluator.label_mapping': 'name'}
#: GEM's soft routing (test only): top-2 plan rows, detections fused
SOFT_ROUTING_TOP2 = {'model.soft_routing': dict(topk=2)}
PREDICTED_DATASET_LABELS = {'model.test_label_space': 'dataset',
                            'val_evaluator.label_mapping': 'offset',
                            'test_evaluator.label_mapping': 'offset'}
METHODS: Dict[str, tuple] = {
    'dino': ('DINO (mixed)', 'dino', ''),
    'moe': ('DINO-MoE', 'moe-dino', ''),
    'damex': ('DAMEX', 'damex-dino', ''),
    'gem': ('GEM (dataset known)', 'gem-dino', ''),
    'gem_unknown': ('GEM (dataset unknown)', 'gem-dino', '_dataset-unknown'),
    'dino_unknown': ('DINO (mixed, dataset unknown)', 'dino', '_dataset-unknown'),
    'moe_unknown': ('DINO-MoE (dataset unknown)', 'moe-dino', '_dataset-unknown'),
    'damex_unknown': ('DAMEX (dataset unknown)', 'damex-dino', '_dataset-unknown'),
    'soft_moe': ('Soft MoE', 'soft-moe-dino', ''),
    'soft_moe_unknown': ('Soft MoE (dataset unknown)', 'soft-moe-dino', '', UNKNOWN),
    'sinkhorn': ('Sinkhorn (BASE)', 'sinkhorn-dino', ''),
    'sinkhorn_unknown': ('Sinkhorn (BASE) (dataset unknown)', 'sinkhorn-dino', '', UNKNOWN),
    'moe_pp': ('MoE++', 'moe-plus-plus-dino', ''),
    'moe_pp_unknown': ('MoE++ (dataset unknown)', 'moe-plus-plus-dino', '', UNKNOWN),
    'remoe': ('ReMoE', 'remoe-dino', ''),
    'remoe_unknown': ('ReMoE (dataset unknown)', 'remoe-dino', '', UNKNOWN),
    'mumoe': ('μMoE', 'mumoe-dino', ''),
    'mumoe_unknown': ('μMoE (dataset unknown)', 'mumoe-dino', '', UNKNOWN),
    'gem_true_routing_names': ('GEM (true routing, labels by name)', 'gem-dino', '',
                               UNIFIED_LABELS),
    'gem_predicted_labels': ('GEM (predicted routing, predicted dataset\'s labels)',
                             'gem-dino', '_dataset-unknown', PREDICTED_DATASET_LABELS),
    'gem_soft_unknown': ('GEM (dataset unknown, soft routing top-2)', 'gem-dino',
                         '_dataset-unknown', SOFT_ROUTING_TOP2),
    'gem_refit_unknown': ('GEM (dataset unknown, classifier refit)', 'gem-dino',
                          '_dataset-unknown'),
}
#: method -> its refit of the domain classifier before testing (see
#: :func:`method_refit`). ``gem_refit_unknown``: GEM's trained checkpoint (the
#: ``gem`` row's training, shared) with only the classifier refitted on frozen
#: features of every training image, with Balanced Meta-Softmax (the fit
#: tool's default and documented choice: the logit adjustment that makes the
#: plain logits estimate the balanced posterior, where inverse-frequency
#: weights would scale the rarest domain's few draws ~100x on v2), the fit
#: tool's other defaults; then tested with the dataset unknown.
METHOD_REFITS: Dict[str, dict] = {
    'gem_refit_unknown': dict(loss_balance='balanced_softmax'),
}

#: per data version: default root, domains, titles, sizes, label-conflict pair
DATA_VERSIONS: Dict[int, dict] = {
    1: dict(data_dir='data/mini_uodb', names=MINI_UODB_DATASETS,
            display=MINI_UODB_DISPLAY_NAMES, sizes=MINI_UODB_SIZES, suffix='',
            conflict_pair=None),
    2: dict(data_dir='data/mini_uodb_v2', names=MINI_UODB_V2_DATASETS,
            display=MINI_UODB_V2_DISPLAY_NAMES, sizes=MINI_UODB_V2_SIZES, suffix='-v2',
            conflict_pair=MINI_UODB_V2_CONFLICT_PAIR),
}

#: config keys that only change testing: two configs that differ only here
#: share one training run (GEM dataset-known and dataset-unknown).
TEST_ONLY_KEYS = ('model.test_dataset_known', 'model.restrict_test_labels',
                  'model.test_label_space', 'model.soft_routing', 'test_dataloader',
                  'test_evaluator', 'test_cfg', 'val_dataloader', 'val_evaluator', 'val_cfg')


# --------------------------------------------------------------------------
# methods, data and configs
# --------------------------------------------------------------------------
def method_config(method: str, version: int) -> str:
    """str: The tiny config of ``method`` for data ``version``."""
    if method not in METHODS:
        raise ValueError(f'unknown method {method!r}, expected one of {list(METHODS)}')
    _, stem, suffix = METHODS[method][:3]
    name = f'{stem}-tiny_r18_mini-uodb{DATA_VERSIONS[version]["suffix"]}{suffix}.py'
    return osp.join(REPO, 'configs', 'gem', name)


def method_overrides(method: str) -> dict:
    """dict: The test-only config overrides of ``method`` (often none)."""
    if method not in METHODS:
        raise ValueError(f'unknown method {method!r}, expected one of {list(METHODS)}')
    return dict(METHODS[method][3]) if len(METHODS[method]) > 3 else {}


def refit_spec(spec: dict) -> dict:
    """The full refit spec: ``spec`` over the fit tool's defaults.

    Args:
        spec (dict): Keyword arguments of
            :func:`~tools.analysis_tools.fit_domain_classifier.refit_domain_classifier`
            among :data:`~tools.analysis_tools.fit_domain_classifier.FIT_DEFAULTS`
            (``loss_balance``, ``iters``, ``fit_batch``, ``lr``,
            ``batch_size``, ``max_images``, ``seed``).

    Returns:
        dict: Every key of ``FIT_DEFAULTS``, ``spec``'s values where given
        (what a cell's fingerprint records: a changed default makes new
        cells).

    Raises:
        ValueError: An unknown key, or an unknown ``loss_balance`` (named).
    """
    unknown = sorted(set(spec) - set(fit_domain_classifier.FIT_DEFAULTS))
    if unknown:
        raise ValueError(f'refit spec: unknown option(s) {unknown}, expected some of '
                         f'{sorted(fit_domain_classifier.FIT_DEFAULTS)}')
    full = dict(fit_domain_classifier.FIT_DEFAULTS, **spec)
    check_choice('refit loss_balance', full['loss_balance'], LOSS_BALANCES)
    return full


def method_refit(method: str) -> Optional[dict]:
    """dict: The full refit spec of ``method`` (:func:`refit_spec`), or None
    for the methods tested on their trained checkpoint as it is."""
    if method not in METHODS:
        raise ValueError(f'unknown method {method!r}, expected one of {list(METHODS)}')
    return refit_spec(METHOD_REFITS[method]) if method in METHOD_REFITS else None


def rarest(version: int, scale: str, k: int = 2) -> List[str]:
    """list[str]: The ``k`` domains with the fewest training images."""
    info = DATA_VERSIONS[version]
    sizes = info['sizes'][scale]
    return sorted(info['names'], key=lambda n: (sizes[n][0], info['names'].index(n)))[:k]


def ensure_data(data_dir: str, version: int, scale: str, seed: int = 0) -> str:
    """Generate mini-UODB in ``data_dir`` unless it is there; check it.

    Args:
        data_dir (str): The root.
        version (int): 1 or 2.
        scale (str): ``'tiny'`` or ``'small'``.
        seed (int): Data seed used when generating. Defaults to 0.

    Returns:
        str: The fingerprint of the data (of its manifest's bytes).

    Raises:
        ValueError: The root holds another version or scale (named).
    """
    manifest = osp.join(data_dir, 'mini_uodb.json')
    if not osp.isfile(manifest):
        print(f'generating mini-UODB v{version} ({scale}) in {data_dir}', flush=True)
        make_mini_uodb.make_mini_uodb(
            data_dir, seed=seed, scale=scale, convert=True, version=version)
    with open(manifest, 'rb') as f:
        raw = f.read()
    meta = json.loads(raw)
    got = (meta.get('version', 1), meta.get('scale'))
    if got != (version, scale):
        raise ValueError(f'{manifest} holds mini-UODB version {got[0]} scale {got[1]!r}, but '
                         f'version {version} scale {scale!r} was asked; pass another '
                         '--data-dir or regenerate it')
    return fingerprint(raw.decode())


def set_planner(cfg, **kwargs) -> None:
    """Set arguments of the config's ``GEMPlannerHook`` in place.

    A value replaces the hook's (a ``similarity`` dict replaces the whole
    similarity, it is not merged into it).

    Raises:
        ValueError: The config has no ``GEMPlannerHook``.
    """
    hooks = [h for h in cfg.get('custom_hooks', []) if h.get('type') == 'GEMPlannerHook']
    if not hooks:
        raise ValueError('the config has no GEMPlannerHook to change')
    for hook in hooks:
        for key, value in kwargs.items():  # replace, never merge (ConfigDict.update merges)
            hook[key] = copy.deepcopy(value)


def build_cfg(config: str, data_dir: str, iters: int, seed: int, work_dir: str,
              overrides: Optional[dict] = None, planner: Optional[dict] = None):
    """A tiny config with the shared data root, budget, seed and schedule.

    The schedule keeps the config's form: linear warm-up over
    ``min(50, iters // 4)`` iterations, then a step of 0.1 at 3/4 of the
    budget; one checkpoint (weights only) at the end; no validation (the
    cells are evaluated by their test runs).

    Args:
        config (str): The config file.
        data_dir (str): The mini-UODB root.
        iters (int): Training iterations.
        seed (int): ``randomness.seed``.
        work_dir (str): The work dir.
        overrides (dict, optional): ``Config.merge_from_dict`` options
            (dotted keys), applied last.
        planner (dict, optional): Arguments of the ``GEMPlannerHook``.

    Returns:
        mmengine.Config: The config.
    """
    cfg = Config.fromfile(config)
    root = osp.abspath(data_dir) + '/'
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = root
    cfg.work_dir = osp.abspath(work_dir)
    # no validation: IterBasedTrainLoop validates at the last iteration unless
    # val_begin lies beyond it; every cell is evaluated once, by its test run
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters + 1,
                         val_begin=iters + 1)
    warmup = max(1, min(50, iters // 4))
    for scheduler in cfg.param_scheduler:
        if scheduler.type == 'LinearLR':
            scheduler.end = warmup
        elif scheduler.type == 'MultiStepLR':
            scheduler.end = iters
            scheduler.milestones = [max(warmup, iters * 3 // 4)]
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', by_epoch=False, interval=iters, max_keep_ckpts=1,
        save_optimizer=False, save_param_scheduler=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=max(1, min(50, iters)))
    cfg.randomness = dict(seed=seed)
    if planner:
        set_planner(cfg, **planner)
    if overrides:
        cfg.merge_from_dict(copy.deepcopy(overrides))
    return cfg


def _strip(obj, drop_keys: Sequence[str] = ()):
    """The config dict without paths and run names (and ``drop_keys``)."""
    data = copy.deepcopy(obj)
    for key in ('work_dir', 'experiment_name', 'load_from', 'resume'):
        data.pop(key, None)
    for dotted in drop_keys:
        node, parts = data, dotted.split('.')
        for part in parts[:-1]:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(parts[-1], None)

    def walk(x):
        if isinstance(x, dict):
            return {k: ('<data>' if k == 'data_root' else walk(v)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v) for v in x]
        return x

    return walk(data)


def train_fingerprint(cfg) -> str:
    """str: Fingerprint of everything in ``cfg`` that affects training."""
    return fingerprint(_strip(cfg.to_dict(), TEST_ONLY_KEYS))


def config_fingerprint(cfg) -> str:
    """str: Fingerprint of the whole config (training and testing)."""
    return fingerprint(_strip(cfg.to_dict()))


def machine_info(threads: int) -> dict:
    """dict: What ran a cell (for the tables' captions)."""
    return dict(machine=platform.machine(), cpus=os.cpu_count(), threads=threads,
                torch=torch.__version__, python=platform.python_version())


# --------------------------------------------------------------------------
# jobs
# --------------------------------------------------------------------------
def make_job(name: str, results_dir: str, work_dir: str, data_dir: str, data_fp: str,
             train: dict, evals: Sequence[dict], keep_checkpoint: bool = False,
             adapt_from: Optional[dict] = None, start_from: Optional[dict] = None) -> dict:
    """Describe one training run and the cells it evaluates (JSON-able).

    Args:
        name (str): The job's name (its work dir under ``work_dir``).
        results_dir (str): The cells' folder.
        work_dir (str): Parent of the job's work dir.
        data_dir (str): The mini-UODB root.
        data_fp (str): :func:`ensure_data`'s fingerprint.
        train (dict): ``config``, ``iters``, ``seed`` and optional
            ``overrides`` / ``planner`` (see :func:`build_cfg`).
        evals (Sequence[dict]): Per cell: ``key``, ``config`` (the test
            config; its training part must equal the job's), optional
            ``overrides`` (added to the job's), ``meta`` (saved in the
            cell) and ``refit`` (a :func:`refit_spec`: the domain classifier
            of the trained checkpoint is refitted with it before this
            cell's test, see :func:`refit_classifier`; it is part of the
            cell's fingerprint, not of the training's).
        keep_checkpoint (bool): Keep the checkpoint after the evaluations
            (for later jobs that start from it).
        adapt_from (dict, optional): ``checkpoint`` (and ``plan``) of a model
            trained on fewer datasets to start from; see
            ``mini_uodb_adapt.py``.
        start_from (dict, optional): Another job's checkpoint to start
            from (see :func:`start_from_job`): ``checkpoint``,
            ``fingerprint`` (that job's ``train_fingerprint``, made part of
            this job's) and ``mode``, ``'load'`` (``load_from``: the same
            model continues) or ``'upcycle'`` (``model.upcycle_from``: a
            dense checkpoint upcycled into this MoE model before GEM plans).

    Returns:
        dict: The job, with ``train_fingerprint`` and each cell's
        ``fingerprint`` filled in (and each ``refit`` completed by
        :func:`refit_spec`).
    """
    job = dict(name=name, results_dir=results_dir, work_dir=osp.join(work_dir, name),
               data_dir=data_dir, data_fingerprint=data_fp, train=dict(train),
               evals=[dict(e) for e in evals], keep_checkpoint=keep_checkpoint,
               adapt_from=adapt_from, start_from=start_from)
    tcfg = _job_cfg(job, job['train']['config'], {})
    parts = dict(train=train_fingerprint(tcfg), data=data_fp,
                 adapt=(adapt_from or {}).get('fingerprint'))
    if start_from:  # (absent otherwise: the fingerprints of earlier cells stay valid)
        if start_from.get('mode') not in START_MODES or not start_from.get('fingerprint'):
            raise ValueError(f'job {name}: start_from needs a fingerprint and a mode in '
                             f'{START_MODES}, got {start_from}')
        parts['start'] = dict(fingerprint=start_from['fingerprint'], mode=start_from['mode'])
    tfp = fingerprint(parts)
    job['train_fingerprint'] = tfp
    for e in job['evals']:
        ecfg = _job_cfg(job, e['config'], e.get('overrides') or {})
        if train_fingerprint(ecfg) != train_fingerprint(tcfg):
            raise ValueError(f'job {name}: cell {e["key"]} ({e["config"]}) does not train as '
                             f'the job ({job["train"]["config"]}) does; give it its own job')
        parts = dict(train=tfp, test=config_fingerprint(ecfg))
        if e.get('refit'):  # (absent otherwise: the fingerprints of earlier cells stay valid)
            e['refit'] = parts['refit'] = refit_spec(e['refit'])
        e['fingerprint'] = fingerprint(parts)
    return job


#: how a job starts from another's checkpoint (:func:`make_job`'s ``start_from``)
START_MODES = ('load', 'upcycle')


def job_checkpoint(job: dict) -> str:
    """str: Where the job's training writes its checkpoint."""
    return osp.join(job['work_dir'], f'iter_{job["train"]["iters"]}.pth')


def start_from_job(job: dict, mode: str) -> dict:
    """A ``start_from`` of :func:`make_job`: begin where ``job`` ended.

    Args:
        job (dict): The earlier job (from :func:`make_job`); mark it
            ``keep_checkpoint`` so its checkpoint stays.
        mode (str): ``'load'`` or ``'upcycle'``.

    Returns:
        dict: ``checkpoint``, ``fingerprint`` and ``mode``.
    """
    return dict(checkpoint=job_checkpoint(job), fingerprint=job['train_fingerprint'],
                mode=mode)


def apply_start(cfg, start_from: dict) -> None:
    """Make the training ``cfg`` start from ``start_from``'s checkpoint.

    Raises:
        FileNotFoundError: The checkpoint is gone (named).
    """
    if not osp.isfile(start_from['checkpoint']):
        raise FileNotFoundError(f'{start_from["checkpoint"]}: the checkpoint to start from is '
                                'gone; rerun the command to train its job again')
    if start_from['mode'] == 'upcycle':  # init_weights loads it, before GEMPlannerHook plans
        cfg.model.upcycle_from = start_from['checkpoint']
    else:
        cfg.load_from = start_from['checkpoint']


def _job_cfg(job: dict, config: str, extra: dict):
    t = job['train']
    overrides = dict(t.get('overrides') or {})
    overrides.update(extra)
    return build_cfg(config, job['data_dir'], t['iters'], t['seed'], job['work_dir'],
                     overrides, t.get('planner'))


def training_overrides(overrides: Optional[dict]) -> dict:
    """The overrides of ``overrides`` that reach training.

    Args:
        overrides (dict, optional): Dotted config keys and their values.

    Returns:
        dict: ``overrides`` without the keys at or below
        :data:`TEST_ONLY_KEYS` (a job takes its training overrides from its
        first cell; its test-only ones belong to that cell alone).
    """
    return {k: v for k, v in (overrides or {}).items()
            if not any(k == t or k.startswith(t + '.') for t in TEST_ONLY_KEYS)}


def group_jobs(cells: Sequence[dict], results_dir: str, work_dir: str, data_dir: str,
               data_fp: str, keep_checkpoint: bool = False,
               start_from: Optional[dict] = None) -> List[dict]:
    """One job per set of cells that train alike.

    Cells whose configs differ only in :data:`TEST_ONLY_KEYS` (for example
    GEM tested with and without the dataset) share one training run.

    Args:
        cells (Sequence[dict]): Per cell: ``key``, ``config``, ``iters``,
            ``seed``, optional ``overrides``, ``planner``, ``meta`` and
            ``refit`` (test only, see :func:`make_job`).
        results_dir, work_dir, data_dir, data_fp, keep_checkpoint,
            start_from: See :func:`make_job` (``start_from`` for every job).

    Returns:
        list[dict]: The jobs, in the order of their first cell.
    """
    groups: Dict[str, List[dict]] = {}
    for c in cells:
        cfg = build_cfg(c['config'], data_dir, c['iters'], c['seed'], work_dir,
                        c.get('overrides'), c.get('planner'))
        groups.setdefault(train_fingerprint(cfg), []).append(c)
    jobs = []
    for members in groups.values():
        first = members[0]
        train = dict(config=first['config'], iters=first['iters'], seed=first['seed'],
                     overrides=training_overrides(first.get('overrides')),
                     planner=first.get('planner'))
        evals = [dict(key=c['key'], config=c['config'], meta=c.get('meta') or {},
                      overrides=c.get('overrides') or {},
                      **({'refit': c['refit']} if c.get('refit') else {})) for c in members]
        jobs.append(make_job(first['key'], results_dir, work_dir, data_dir, data_fp, train,
                             evals, keep_checkpoint=keep_checkpoint, start_from=start_from))
    return jobs


def cell_key(name: str, seed: int) -> str:
    """str: The key of the (method or variant ``name``, seed) cell."""
    return f'{name}_s{seed}'


def method_seed_jobs(args: argparse.Namespace, data_fp: str,
                     method_cell: Callable[[str], dict]) -> List[dict]:
    """The jobs of every (method, seed) cell, grouped seed by seed.

    Each seed's cells go through :func:`group_jobs` together, so the cells
    of a seed that train alike (a method's protocols) share one training run.

    Args:
        args (argparse.Namespace): ``methods``, ``seeds``, ``iters``,
            ``results_dir``, ``work_dir``, ``data_dir`` and
            ``keep_checkpoints``.
        data_fp (str): :func:`ensure_data`'s fingerprint.
        method_cell (Callable): method -> its cell's ``config``, ``meta``,
            ``overrides`` and optional ``refit`` (the same for every seed;
            asked once per method).

    Returns:
        list[dict]: The jobs, seed by seed, each in the order of its first
        cell (``key`` :func:`cell_key`).
    """
    specs = {m: method_cell(m) for m in args.methods}
    jobs = []
    for seed in args.seeds:
        cells = [dict(copy.deepcopy(specs[m]), key=cell_key(m, seed), iters=args.iters,
                      seed=seed) for m in args.methods]
        jobs += group_jobs(cells, args.results_dir, args.work_dir, args.data_dir, data_fp,
                           args.keep_checkpoints)
    return jobs


def reuse_saved_cells(jobs: Sequence[dict], sources: Sequence[str], log=print) -> int:
    """Copy cells that other benchmarks saved with the same fingerprint.

    A fingerprint covers the training and test configs (paths aside), the
    data, the budget and the seed, so a match is the very cell this job
    would make. The copy keeps the original's results, takes the job's
    ``key`` and ``meta`` and records ``reused_from``.

    Args:
        jobs (Sequence[dict]): Jobs of :func:`make_job`.
        sources (Sequence[str]): Results folders to take cells from
            (missing ones, the jobs' own folders and copies are ignored).
        log (Callable): Where progress lines go.

    Returns:
        int: The number of cells copied.
    """
    own = {osp.realpath(j['results_dir']) for j in jobs}
    found: Dict[str, tuple] = {}  # fingerprint -> (path, cell)
    for src in sources:
        if not osp.isdir(src) or osp.realpath(src) in own:
            continue
        store = CellStore(src)
        for key, cell in store.all().items():
            if cell.get('fingerprint') and not cell.get('reused_from'):  # originals only
                found.setdefault(cell['fingerprint'], (store.path(key), cell))
    copied = 0
    for job in jobs:
        for e in pending(job):
            if e['fingerprint'] not in found:
                continue
            path, original = found[e['fingerprint']]
            cell = dict(original)
            cell.update(key=e['key'], meta=e.get('meta') or {},
                        reused_from=osp.relpath(path, osp.dirname(job['results_dir'])))
            CellStore(job['results_dir']).save(e['key'], cell)
            log(f'{e["key"]}: the same cell as {path}, copied')
            copied += 1
    return copied


def cost_line(cells: Sequence[dict]) -> str:
    """What the cells cost here, and which were copied (for the captions).

    Args:
        cells (Sequence[dict]): Saved cells; those sharing a training run
            (``train_fingerprint``) count it once, copied ones not at all.

    Returns:
        str: One sentence: cells, training runs, minutes, s/iteration and
        the copied cells with their sources.
    """
    own = [c for c in cells if not c.get('reused_from')]
    copied = [c for c in cells if c.get('reused_from')]
    trained = {c['train_fingerprint']: c['train_s'] for c in own}
    total = sum(trained.values()) + sum(c['test_s'] + (c.get('refit') or {}).get('total_s', 0)
                                        for c in own)
    text = (f'{len(cells)} cell(s), {len(trained)} training run(s); cell time '
            f'{total / 60:.0f} min in all (training {sum(trained.values()) / 60:.0f} min')
    if own:
        text += f', {np.mean([c["iter_s"] for c in own]):.2f} s/iteration on average'
    text += ')'
    if copied:
        text += ('; copied from another benchmark, not trained again (same fingerprint): '
                 + ', '.join(f'`{c["key"]}` = `{c["reused_from"]}`' for c in copied))
    return text + '.'


def reuse_sources(args: argparse.Namespace) -> List[str]:
    """list[str]: ``--reuse``'s folders, by default the results' siblings."""
    if args.reuse is not None:
        return list(args.reuse)
    parent = osp.dirname(osp.abspath(args.results_dir))
    if not osp.isdir(parent):
        return []
    return [osp.join(parent, d) for d in sorted(os.listdir(parent))
            if osp.isdir(osp.join(parent, d))]


def pending(job: dict) -> List[dict]:
    """list[dict]: The job's evaluations whose cells are not saved yet."""
    store = CellStore(job['results_dir'])
    return [e for e in job['evals'] if not store.done(e['key'], e['fingerprint'])]


def trained(job: dict) -> Optional[dict]:
    """dict: The job's ``train_done.json`` if its checkpoint of this
    fingerprint is there, else None."""
    marker = osp.join(job['work_dir'], 'train_done.json')
    if not (osp.isfile(marker) and osp.isfile(job_checkpoint(job))):
        return None
    with open(marker) as f:
        done = json.load(f)
    return done if done.get('train_fingerprint') == job['train_fingerprint'] else None


def needs_run(job: dict) -> bool:
    """bool: Cells to make, or a checkpoint a later job needs to remake."""
    return bool(pending(job)) or bool(job.get('checkpoint_needed') and trained(job) is None)


class ExpertUtilisation(Hook):
    """Counts, per MoE layer, dataset and expert, the test images' decoder tokens.

    ``layers`` (``(L, K, M)``) counts each token's expert from the layer's
    ``token_experts`` (every router records them; -1, a dropped token, is
    not counted). The reports compute from it the specialisation measure
    (NMI of dataset and expert, per layer) and the expert utilisation, its
    sum over the layers: what the routers' per-image ``image_experts``
    counts add up to (each image's row is the count of its kept tokens'
    experts), which cells saved before ``layer_counts`` hold as
    ``utilisation``.

    Args:
        num_datasets (int): K, the test set's datasets (the rows are the test
            samples' ``dataset_id``).
        num_experts (int): M.
    """

    priority = 'LOWEST'

    def __init__(self, num_datasets: int, num_experts: int) -> None:
        self.num_datasets, self.num_experts = num_datasets, num_experts
        self.layers: Optional[np.ndarray] = None

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        ids = [s.metainfo['dataset_id'] for s in data_batch['data_samples']]
        ffns = list(model.moe_ffns())
        if self.layers is None:
            self.layers = np.zeros((len(ffns), self.num_datasets, self.num_experts), np.int64)
        for i, ffn in enumerate(ffns):
            stats = getattr(ffn, 'routing_stats', {}) or {}
            experts = stats.get('token_experts')
            if (experts is not None and experts.dim() == 2 and experts.shape[0] == len(ids)
                    and int(experts.max()) < self.num_experts):
                self.layers[i] += dataset_expert_counts(
                    experts, torch.as_tensor(ids), self.num_datasets,
                    self.num_experts).numpy()


class IterCPUTimer(Hook):
    """Process CPU seconds of every training iteration (all threads)."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.times: List[float] = []
        self._start = 0.0

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self._start = time.process_time()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.times.append(time.process_time() - self._start)


def _plan_of(work_dir: str) -> Optional[dict]:
    path = osp.join(work_dir, 'gem_plan.json')
    if not osp.isfile(path):
        return None
    plan = GEMPlan.load(path)
    return dict(dataset_names=list(plan.dataset_names), quota=plan.quota.tolist(),
                hash=plan.hash, lp_bound=plan.lp_bound, rounded_cost=plan.rounded_cost)


#: the refitted checkpoint of a cell with a ``refit`` spec, in its test work dir
REFIT_CHECKPOINT = 'domain_classifier_refit.pth'


def refit_classifier(cfg, checkpoint: str, spec: dict) -> dict:
    """Refit the domain classifier of ``checkpoint`` for one cell's test.

    Calls :func:`~tools.analysis_tools.fit_domain_classifier.refit_domain_classifier`
    with ``spec`` on the cell's config (its training and test datasets, the
    test pipeline; the fit uses the training images only) and writes the
    new checkpoint, atomically, to ``<cfg.work_dir>/`` :data:`REFIT_CHECKPOINT`.

    Args:
        cfg (mmengine.Config): The cell's test config (``work_dir`` set).
        checkpoint (str): The job's trained checkpoint (not modified).
        spec (dict): A :func:`refit_spec`.

    Returns:
        dict: The cell's ``refit`` record: ``spec``, ``names``,
        ``fit_images`` (training images per domain the fit used), ``recall``
        and ``balanced_accuracy`` of the refitted classifier on those
        images, ``checkpoint_recall`` and ``checkpoint_balanced_accuracy``
        (the trained classifier's, on the same images), ``extract_s``,
        ``fit_s``, ``total_s`` (wall seconds) and ``cpu_s`` (process CPU
        seconds), and ``checkpoint``: the path written (popped by
        :func:`run_job` before the cell is saved).
    """
    out = osp.join(cfg.work_dir, REFIT_CHECKPOINT)
    start, cpu = time.perf_counter(), time.process_time()
    result = fit_domain_classifier.refit_domain_classifier(
        copy.deepcopy(cfg), checkpoint, out, test_split=False, **refit_spec(spec))
    train_recall, balanced = result['recall']['train'], result['balanced_accuracy']['train']
    return dict(spec=refit_spec(spec), names=result['names'],
                fit_images=result['images']['train'], recall=train_recall['refit'],
                balanced_accuracy=balanced['refit'],
                checkpoint_recall=train_recall.get('checkpoint'),
                checkpoint_balanced_accuracy=balanced.get('checkpoint'),
                extract_s=result['extract_s'], fit_s=result['fit_s'],
                total_s=time.perf_counter() - start, cpu_s=time.process_time() - cpu,
                checkpoint=out)


def run_job(job: dict, threads: int) -> List[str]:
    """Train (unless done) and evaluate the job's unsaved cells.

    Args:
        job (dict): From :func:`make_job`.
        threads (int): torch CPU threads.

    Returns:
        list[str]: The keys of the cells saved by this call.
    """
    if not needs_run(job):
        return []
    todo = pending(job)
    torch.set_num_threads(threads)
    store = CellStore(job['results_dir'])
    work_dir = job['work_dir']
    iters = job['train']['iters']
    ckpt = job_checkpoint(job)
    marker = osp.join(work_dir, 'train_done.json')
    done = trained(job)
    if done is None:
        for stale in (marker, ckpt):  # of a stale or interrupted run (its logs stay)
            if osp.isfile(stale):
                os.remove(stale)
        cfg = _job_cfg(job, job['train']['config'], {})
        cfg.experiment_name = f'{job["name"]}_train_{time.strftime("%Y%m%d_%H%M%S")}'
        if job.get('adapt_from'):
            mini_uodb_adapt.prepare(cfg, job['adapt_from'])
        if job.get('start_from'):
            apply_start(cfg, job['start_from'])
        start, cpu = time.perf_counter(), time.process_time()
        runner = build_runner(cfg)
        cpu_timer = IterCPUTimer()
        runner.register_hook(cpu_timer)
        runner.train()
        train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu
        dataset = find_uodb_dataset(runner.train_dataloader.dataset)
        try:  # wall time of each iteration, as IterTimerHook measured it
            iter_times = [float(t) for t in runner.message_hub.get_scalar('train/time').data[0]]
        except KeyError:
            iter_times = []
        done = dict(train_fingerprint=job['train_fingerprint'], train_s=train_s,
                    train_cpu_s=train_cpu_s, iter_s=train_s / iters,
                    iter_median_s=float(np.median(iter_times)) if iter_times else None,
                    iter_cpu_median_s=float(np.median(cpu_timer.times)),
                    lengths=[int(n) for n in dataset.dataset_lengths],
                    train_names=list(dataset.dataset_names), plan=_plan_of(work_dir))
        del runner
        gc.collect()
        atomic_write(marker, json.dumps(done))
    saved = []
    for e in todo:
        cfg = _job_cfg(job, e['config'], e.get('overrides') or {})
        cfg.work_dir = osp.join(work_dir, f'test_{e["key"]}')
        refit = refit_classifier(cfg, ckpt, e['refit']) if e.get('refit') else None
        cfg.load_from = refit.pop('checkpoint') if refit else ckpt
        cfg.experiment_name = f'{e["key"]}_test_{time.strftime("%Y%m%d_%H%M%S")}'
        start, cpu = time.perf_counter(), time.process_time()
        runner = build_runner(cfg)
        util = None
        if hasattr(runner.model, 'moe_ffns') and runner.model.moe_ffns():
            # rows: the test set's datasets (an unseen domain is not one of the model's)
            tested = find_uodb_dataset(runner.test_dataloader.dataset).num_datasets
            util = ExpertUtilisation(tested, runner.model.num_experts)
            runner.register_hook(util)
        metrics = runner.test()
        test_s, test_cpu_s = time.perf_counter() - start, time.process_time() - cpu
        dataset = find_uodb_dataset(runner.test_dataloader.dataset)
        cell = dict(
            key=e['key'], fingerprint=e['fingerprint'], job=job['name'],
            train_fingerprint=job['train_fingerprint'],
            data_fingerprint=job['data_fingerprint'],
            config=osp.relpath(e['config'], REPO), seed=job['train']['seed'], iters=iters,
            metrics={k: float(v) for k, v in metrics.items()},
            names=list(dataset.dataset_names),
            display=list(dataset.metainfo['dataset_display_names']),
            test_images=[int(n) for n in dataset.dataset_lengths],
            train_names=done['train_names'], lengths=done['lengths'],
            train_s=done['train_s'], train_cpu_s=done['train_cpu_s'], iter_s=done['iter_s'],
            iter_median_s=done['iter_median_s'], iter_cpu_median_s=done['iter_cpu_median_s'],
            test_s=test_s, test_cpu_s=test_cpu_s,
            layer_counts=(util.layers.tolist() if util is not None and util.layers is not None
                          else None),
            plan=done['plan'], meta=e.get('meta') or {}, machine=machine_info(threads),
            finished=time.strftime('%Y-%m-%d %H:%M:%S'))
        if refit:
            cell['refit'] = refit
        store.save(e['key'], cell)
        if refit and not job.get('keep_checkpoint'):
            os.remove(cfg.load_from)
        saved.append(e['key'])
        print(f'saved cell {e["key"]}: mean AP {100 * cell["metrics"].get("uodb/bbox_mAP", 0):.1f}'
              f' (train {done["train_s"] / 60:.1f} min, test {test_s:.0f} s'
              + (f', classifier refit {refit["total_s"]:.0f} s' if refit else '') + ')',
              flush=True)
        del runner
        gc.collect()
    if not job.get('keep_checkpoint') and not pending(job):
        start_from = osp.join(work_dir, 'start_from_base.pth')  # mini_uodb_adapt.prepare's
        for path in (ckpt, marker, start_from):
            if osp.isfile(path):
                os.remove(path)
    return saved


def run_jobs(stages: Sequence[Sequence[dict]], parallel: int = 1, threads: int = 0,
             log=print) -> List[str]:
    """Run jobs stage by stage (a stage may start from the previous ones).

    Args:
        stages (Sequence[Sequence[dict]]): Jobs, grouped in stages.
        parallel (int): Jobs at a time. 1 runs them in this process; more
            runs each as a subprocess (``--run-job``).
        threads (int): torch threads per job; 0 means all cores divided by
            ``parallel``.
        log (Callable): Where progress lines go.

    Returns:
        list[str]: Names of the jobs that failed (their cells are missing;
        rerun to retry them).
    """
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, parallel))
    failed = []
    for jobs in stages:
        todo = [j for j in jobs if needs_run(j)]
        skipped = len(jobs) - len(todo)
        if skipped:
            log(f'{skipped} of {len(jobs)} job(s) already saved: skipped')
        if parallel <= 1:
            for job in todo:
                log(f'==> {job["name"]}: {len(pending(job))} cell(s) to make')
                try:
                    run_job(job, threads)
                except Exception:  # keep going: the other cells still count
                    traceback.print_exc()
                    failed.append(job['name'])
        else:
            failed += _run_subprocesses(todo, parallel, threads, log)
    return failed


def _run_subprocesses(jobs: Sequence[dict], parallel: int, threads: int, log) -> List[str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([REPO] + [p for p in [os.environ.get('PYTHONPATH')]
                                                    if p]))
    queue, running, failed = list(jobs), [], []
    while queue or running:
        while queue and len(running) < parallel:
            job = queue.pop(0)
            os.makedirs(job['work_dir'], exist_ok=True)
            job_file = atomic_write(osp.join(job['work_dir'] + '.job.json'), json.dumps(job))
            log_file = open(job['work_dir'] + '.log', 'w')
            proc = subprocess.Popen(
                [sys.executable, osp.abspath(__file__), '--run-job', job_file, '--threads',
                 str(threads)], stdout=log_file, stderr=subprocess.STDOUT, env=env)
            log(f'==> {job["name"]}: started (pid {proc.pid}, log {job["work_dir"]}.log)')
            running.append((job, proc, log_file))
        time.sleep(2)
        for item in list(running):
            job, proc, log_file = item
            if proc.poll() is None:
                continue
            log_file.close()
            running.remove(item)
            status = 'done' if proc.returncode == 0 else f'FAILED (exit {proc.returncode})'
            log(f'<== {job["name"]}: {status}')
            if proc.returncode != 0:
                failed.append(job['name'])
    return failed


def add_common_args(parser: argparse.ArgumentParser, default_iters: Optional[int]) -> None:
    """Options every mini-UODB benchmark shares."""
    parser.add_argument('--data-version', type=int, default=2, choices=sorted(DATA_VERSIONS))
    parser.add_argument('--data-dir', default=None,
                        help='mini-UODB root (default: data/mini_uodb[_v2]; generated if absent)')
    parser.add_argument('--scale', default='small', choices=['tiny', 'small'])
    parser.add_argument('--iters', type=int, default=default_iters,
                        help='training iterations per cell')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    # measured on the shared 2-core machine: two 1-thread cells at a time made 7x
    # the iterations per second of one 2-thread cell (README, mini-UODB)
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads per cell (0: cores / --parallel)')
    parser.add_argument('--parallel', type=int, default=2,
                        help='cells trained at a time (1: in this process; more: one '
                        'subprocess each)')
    parser.add_argument('--work-dir', default=None,
                        help='checkpoints and logs (default: work_dirs/<benchmark>)')
    parser.add_argument('--results-dir', default=None, help='the saved cells')
    parser.add_argument('--keep-checkpoints', action='store_true')
    parser.add_argument('--render', action='store_true',
                        help='only re-render the tables from the saved cells (no training)')
    parser.add_argument('--out', default=None, help='markdown file (default: beside the cells)')
    parser.add_argument('--reuse', nargs='*', default=None,
                        help='results folders whose cells with the same fingerprint are copied '
                        'instead of trained again (default: the folders beside --results-dir; '
                        'none given: reuse nothing)')


def resolve_paths(args: argparse.Namespace, bench: str, tag: str) -> None:
    """Fill ``data_dir``, ``work_dir``, ``results_dir`` and ``out`` defaults."""
    info = DATA_VERSIONS[args.data_version]
    args.data_dir = args.data_dir or info['data_dir']
    if args.data_dir == info['data_dir'] and args.scale != 'small':
        args.data_dir = f'{args.data_dir}_{args.scale}'
    name = f'{bench}_v{args.data_version}_{tag}'
    args.work_dir = args.work_dir or osp.join('work_dirs', name)
    args.results_dir = args.results_dir or osp.join(REPO, 'tools', 'benchmark', 'results', name)
    args.out = args.out or osp.join(args.results_dir + '.md')


def comparison_groups(version: int, scale: str, names: Sequence[str]) -> Dict[str, List[str]]:
    """The domain groups every report compares on.

    Returns:
        dict: ``'Mean AP'`` (all ``names``), the two rarest domains and, for
        v2, the label-conflict pair, each titled with its domains.
    """
    rare = rarest(version, scale)
    groups = {'Mean AP': list(names), f'Rarest two ({", ".join(rare)})': rare}
    pair = DATA_VERSIONS[version]['conflict_pair']
    if pair:
        groups[f'Label-conflict pair ({", ".join(pair)})'] = list(pair)
    return groups


def run_benchmark(args: argparse.Namespace, make_stages: Callable, render: Callable) -> int:
    """The common ``main`` of the benchmarks: run the cells, then report.

    Args:
        args (argparse.Namespace): With :func:`add_common_args`' options.
        make_stages (Callable): ``(args, data_fingerprint)`` -> an iterable
            of stages (lists of jobs); a stage is asked for only after the
            previous one ran.
        render (Callable): ``(args)`` -> the markdown report.

    Returns:
        int: The exit status (1 if a job failed).
    """
    failed: List[str] = []
    if not args.render:
        data_fp = ensure_data(args.data_dir, args.data_version, args.scale)
        sources = reuse_sources(args)
        for stage in make_stages(args, data_fp):
            reuse_saved_cells(stage, sources)
            failed += run_jobs([stage], args.parallel, args.threads)
    return finish(render(args), args.out, failed)


def finish(report: str, out: str, failed: Sequence[str]) -> int:
    """Print and write the report; the exit status (1 if jobs failed)."""
    print(report)
    atomic_write(out, report + '\n')
    print(f'written to {out}')
    if failed:
        print(f'{len(failed)} job(s) failed: {", ".join(failed)}; rerun the same command to '
              'retry them (saved cells are kept)', file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description='Run one saved benchmark job')
    parser.add_argument('--run-job', required=True, help='a job JSON file')
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args(argv)
    with open(args.run_job) as f:
        job = json.load(f)
    run_job(job, args.threads)
    return 0


if __name__ == '__main__':
    sys.exit(main())
