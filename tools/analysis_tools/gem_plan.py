# Copyright (c) mmgem contributors. All rights reserved.
"""Make a GEM plan offline: print it, write its JSON and its heat map.

From a training config: the plan training would make, bit for bit (same
hash). The config's ``GEMPlannerHook`` settings (similarity sources,
capacity factor, beta, solver, rounding), the model's ``num_experts`` and
the training dataloader (its dataset with ``select``, ``dataset_indices``
and ``indices``, its sampler's loads, the training image ids) are built
with MMEngine exactly as in training; the ``features`` source builds and
initialises the model as the Runner does (``load_from`` included)::

    python tools/analysis_tools/gem_plan.py \\
        --config configs/gem/few_shot/gem-dino-4scale_r50_8xb2-36e_uodb_kitti-50shot.py \\
        [--data-root data/uodb] [--cfg-options k=v ...] [--out-dir work_dirs/gem_plan]

Give the plan to a model with ``model.plan_file=...`` (``--cfg-options``);
in training, ``GEMPlannerHook`` checks that it fits the config and data.

From a statistics file (JSON/YAML: image counts, class lists, prior groups),
for analysis without the data (routing by quantiles, exact quotas only once
the hook cuts the thresholds at the training images)::

    python tools/analysis_tools/gem_plan.py \\
        --stats configs/_base_/datasets/uodb_stats.json --experts 8 \\
        [--capacity-factor 1.25] [--beta 0] [--similarity prior,labels] \\
        [--solver ECOS] [--rounding auto] [--out-dir work_dirs/gem_plan]

``--capacity-factor none`` disables the capacity limit; ``--prior`` adds or
replaces prior groups (``"coco,voc,comic;kitti,lisa"``). With ``--config``
these options override the planning settings (the plan then differs from the
training plan, which is printed). The plan is written to
``<out-dir>/gem_plan.json`` and ``<out-dir>/gem_plan.png``.
"""
import argparse
import copy
import os.path as osp
import sys
import tempfile
import types
import uuid

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: options that override the hook's settings with --config
OVERRIDES = ('capacity_factor', 'beta', 'similarity', 'weights', 'prior', 'solver',
             'fallback_solvers', 'rounding')


def _import_planner():
    """Import mmgem.planner; without mmgem or mmdet installed, bypass mmgem/__init__."""
    try:
        import mmgem.planner as planner
    except ImportError:
        pkg = types.ModuleType('mmgem')
        pkg.__path__ = [osp.join(ROOT, 'mmgem')]
        sys.modules['mmgem'] = pkg
        import mmgem.planner as planner
    return planner


def _capacity_factor(text):
    return None if str(text).lower() in ('none', 'off', '') else float(text)


def _list(text):
    return [s.strip() for s in text.split(',') if s.strip()] if text else None


def _weights(text):
    if not text:
        return None
    out = {}
    for item in text.split(','):
        key, _, val = item.partition('=')
        out[key.strip()] = float(val)
    return out


def _prior(text):
    return [[n.strip() for n in g.split(',') if n.strip()] for g in text.split(';')]


def plan_from_config(config: str, data_root=None, cfg_options=None, overrides=None,
                     work_dir=None):
    """The plan a training run of ``config`` would make.

    The config's ``GEMPlannerHook`` entry is the planning config; the plan
    is made by :class:`mmgem.engine.planning.PlanningService`, as in training.

    Args:
        config (str): A GEM training config with a ``GEMPlannerHook``.
        data_root (str, optional): Overrides the training dataset's
            ``data_root``.
        cfg_options (dict, optional): Config overrides (as ``--cfg-options``).
        overrides (dict, optional): Planning settings to override.
        work_dir (str, optional): Work dir of the temporary Runner (the
            ``features`` source only); a temporary folder by default.

    Returns:
        GEMPlan: The plan (its hash equals the hook's for the same config).
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import mmgem  # noqa: F401  (registers mmgem's modules)
    from mmgem.engine.hooks.gem_planner_hook import GEMPlannerHook
    from mmgem.engine.planning import PlanningService
    from mmgem.engine.runner import build_runner

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if data_root is not None:
        cfg.train_dataloader.dataset.data_root = data_root
    hooks = [h for h in cfg.get('custom_hooks', None) or []
             if h.get('type') in ('GEMPlannerHook', GEMPlannerHook)]
    if not hooks:
        raise SystemExit(f'config {config!r} has no GEMPlannerHook in custom_hooks: add one, or '
                         'plan from a statistics file with --stats')
    settings = copy.deepcopy(dict(hooks[0]))
    settings.pop('type')
    settings.pop('priority', None)
    settings.update(overrides or {})
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    service = PlanningService(settings)
    num_experts = service.config.num_experts or cfg.model.get('num_experts')
    if 'features' not in service.config.sources:
        loader = Runner.build_dataloader(cfg.train_dataloader)
        return service.make_plan(loader, num_experts=num_experts)
    # the features are probed from the model as training initialises it
    with tempfile.TemporaryDirectory() as tmp:
        cfg.work_dir = work_dir or tmp
        cfg.custom_hooks = [h for h in cfg.custom_hooks if h is not hooks[0]]
        cfg.model.pop('plan_file', None)  # plan, do not read a plan
        cfg.log_level = 'WARNING'
        # a name of its own: MMEngine's logger and visualizer are global instances
        # keyed by it, and a training Runner built in the same second must not
        # inherit this one's (temporary) folders
        cfg.experiment_name = f'gem_plan_{uuid.uuid4().hex}'
        runner = build_runner(cfg)
        loader = runner.train_dataloader  # builds the train loop, as train() does first
        runner._init_model_weights()
        if cfg.get('load_from') and not cfg.get('resume', False):
            runner.load_checkpoint(cfg.load_from)
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        return service.make_plan(loader, model)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Make a GEM plan (LP + capacity-aware rounding), print it, write JSON '
        'and a heat map.')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--stats', help='dataset statistics file (.json/.yaml)')
    src.add_argument('--config', help='training config: the plan training would make')
    parser.add_argument('--data-root', help='with --config: override data_root')
    parser.add_argument('--cfg-options', nargs='+', default=None, metavar='KEY=VALUE',
                        help='with --config: override config settings')
    parser.add_argument('--experts', type=int, default=None,
                        help="number of experts M (--stats; --config uses the model's)")
    parser.add_argument('--capacity-factor', default=None,
                        help='capacity factor >= 1, or "none" for no limit (default 1.25)')
    parser.add_argument('--beta', type=float, default=None,
                        help='fairness exponent in [0, 1] (default 0)')
    parser.add_argument('--similarity', default=None,
                        help='comma-separated sources among prior, labels, features '
                        '(default: every source the statistics provide)')
    parser.add_argument('--weights', default=None,
                        help='source weights, e.g. "prior=1,labels=0.5" (default equal)')
    parser.add_argument('--prior', default=None,
                        help='prior groups "a,b;c,d" (replaces the file\'s prior)')
    parser.add_argument('--solver', default=None, help='CVXPY LP solver (default ECOS)')
    parser.add_argument('--fallback-solvers', default=None,
                        help='comma-separated solvers tried if --solver is missing or fails')
    parser.add_argument('--rounding', default=None, choices=['auto', 'heuristic', 'exact'],
                        help='levels 1-2 of the compiler (default auto)')
    parser.add_argument('--out-dir', default='work_dirs/gem_plan',
                        help='where gem_plan.json and gem_plan.png go')
    parser.add_argument('--no-plot', action='store_true', help='skip the PNG')
    args = parser.parse_args(argv)
    if args.stats and args.experts is None:
        parser.error('--stats needs --experts')
    return args


def _stats_plan(args, planner):
    stats = planner.load_dataset_stats(args.stats)
    prior = _prior(args.prior) if args.prior else stats.prior
    available = dict(prior=prior, labels=stats.labels if len(stats.labels) == len(
        stats.names) else None, features=stats.features)
    sources = _list(args.similarity) or [k for k, v in available.items() if v is not None]
    for s in sources:
        if s not in available:
            raise SystemExit(f'--similarity: unknown source {s!r} (prior, labels, features)')
        if available[s] is None:
            raise SystemExit(f'--similarity {s}: the statistics give no {s}')
    weights = _weights(args.weights)
    sim = planner.build_similarity(stats.names, weights=weights,
                                   **{s: available[s] for s in sources})
    spec = dict(sources={s: float((weights or {}).get(s, 1.0)) for s in sorted(sources)},
                prior=[list(g) for g in prior] if 'prior' in sources else None)
    cf = '1.25' if args.capacity_factor is None else args.capacity_factor
    plan = planner.make_plan(stats.names, stats.loads, sim, args.experts,
                             capacity_factor=_capacity_factor(cf),
                             beta=0.0 if args.beta is None else args.beta,
                             solver=args.solver or 'ECOS',
                             fallback_solvers=_list(args.fallback_solvers),
                             rounding=args.rounding or 'auto', similarity_spec=spec)
    print(f'similarity: {", ".join(sources)}')
    return plan


def _config_plan(args):
    overrides = {}
    if args.capacity_factor is not None:
        overrides['capacity_factor'] = _capacity_factor(args.capacity_factor)
    for key in ('beta', 'solver', 'rounding'):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.fallback_solvers:
        overrides['fallback_solvers'] = _list(args.fallback_solvers)
    if args.similarity or args.weights or args.prior:
        sources = _list(args.similarity) or sorted(_weights(args.weights) or {})
        weights = _weights(args.weights) or {}
        overrides['similarity'] = dict(
            sources={s: weights.get(s, 1.0) for s in sources},
            prior=_prior(args.prior) if args.prior else None)
    if args.experts is not None:
        overrides['num_experts'] = args.experts
    if overrides:
        print(f'note: {sorted(overrides)} override the config\'s GEMPlannerHook settings, so '
              'this plan is not the one training makes')
    cfg_options = None
    if args.cfg_options:
        from mmengine.config import DictAction
        ns = argparse.Namespace()
        DictAction(option_strings=[], dest='opts')(None, ns, args.cfg_options)
        cfg_options = ns.opts
    return plan_from_config(args.config, args.data_root, cfg_options, overrides)


def main(argv=None) -> int:
    args = parse_args(argv)
    planner = _import_planner()
    try:
        plan = _stats_plan(args, planner) if args.stats else _config_plan(args)
    except (planner.PlanError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(plan)
    print('groups:')
    for g in plan.groups:
        print(f'  experts {g["experts"]}: {", ".join(g["datasets"])} (anchor {g["anchor"]})')
    json_path = plan.save(osp.join(args.out_dir, 'gem_plan.json'))
    print(f'plan written to {json_path}')
    if not args.no_plot:
        png = plan.plot(osp.join(args.out_dir, 'gem_plan.png'))
        print(f'heat map written to {png}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
