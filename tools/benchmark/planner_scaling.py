# Copyright (c) mmgem contributors. All rights reserved.
"""Scaling benchmark of the GEM planner: solve + round time and plan quality.

For each (K datasets, M experts) size and each installed LP solver, seeded
random instances are planned with :func:`mmgem.planner.make_plan`; the table
reports the median wall time of LP + compiler, the LP's column generation
rounds, and the rounded-cost / LP-bound ratio (the absolute gap where the
bound is ~0). The first rows plan the real UODB statistics
(``configs/_base_/datasets/uodb_stats.json``) on 8 experts with the label
similarity, and with DAMEX's prior + labels. Random instances: datasets drawn
around ``K // 4 + 1`` latent domains
(cosine of noisy 16-d features, sharpened), log-normal loads (median 3000
images), ``capacity_factor`` 1.25 and ``beta`` 0.

Usage::

    python tools/benchmark/planner_scaling.py
    python tools/benchmark/planner_scaling.py --sizes 11x8 50x16 --repeats 5

It prints a markdown table and writes it to
``tools/benchmark/results/planner_scaling.md``.
"""
import argparse
import os
import os.path as osp
import platform
import sys
import time

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


HERE = osp.dirname(osp.abspath(__file__))
if not __package__:  # run by path: make the `tools` package importable
    from mmgem.utils.tool_scripts import import_tools_beside
    import_tools_beside(__file__)
from tools.benchmark.planner_instances import import_planner as _import_planner  # noqa: E402
from tools.benchmark.planner_instances import scaling_instance  # noqa: E402


def random_instance(num_datasets: int, seed: int):
    """A seeded random planning instance (``planner_instances.scaling_instance``).

    Args:
        num_datasets (int): K.
        seed (int): Seed of numpy's default generator.

    Returns:
        tuple: ``(names, loads, similarity)``.
    """
    ins = scaling_instance(num_datasets, 1, seed)
    return ins['names'], np.asarray(ins['loads']), ins['similarity']


def best_integral_cost(plan) -> float:
    """Cost of the best integral plan (the MILP of levels 1-2, HiGHS).

    Integral means what the compiler may produce: anchors open or not
    (``y`` binary), integer expert counts ``u``, datasets split over groups
    (``x`` continuous). Its ratio to the LP bound is the LP's integrality
    gap, which no rounding can beat.

    Args:
        plan (GEMPlan): A plan (its inputs are used).

    Returns:
        float: The MILP optimum (nan when HiGHS stopped without proof).
    """
    planner = _import_planner()
    sol = planner.solve_gem_milp(plan.cost_matrix, plan.images, plan.num_experts,
                                 plan.capacity)
    return sol.value if sol.optimal else float('nan')


def run_uodb(stats_path, solvers, repeats, capacity_factor):
    """The real UODB statistics on 8 experts, label and prior+label similarity."""
    planner = _import_planner()
    stats = planner.load_dataset_stats(stats_path)
    rows = []
    for label, kwargs in (('labels', dict(labels=stats.labels)),
                          ('prior+labels', dict(prior=stats.prior, labels=stats.labels))):
        sim = planner.build_similarity(stats.names, **kwargs)
        ref = None
        for solver in solvers:
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                plan = planner.make_plan(stats.names, stats.loads, sim, 8,
                                         capacity_factor=capacity_factor, solver=solver)
                times.append(time.perf_counter() - t0)
            assert plan.expert_loads.max() <= plan.capacity
            if ref is None:
                ref = best_integral_cost(plan)
            bound, cost = plan.lp_bound, plan.rounded_cost
            rows.append(dict(k=f'UODB ({label}) 11', m=8, solver=solver,
                             median=float(np.median(times)), max=float(np.max(times)),
                             n=len(times), rounds=plan.lp.rounds,
                             ratio=cost / bound if bound > 1e-3 else float('nan'),
                             gap=cost - bound,
                             milp_ratio=ref / bound if bound > 1e-3 else float('nan'),
                             partial=False))
            print(f'UODB {label} {solver}: median {np.median(times):.3f}s, ratio '
                  f'{rows[-1]["ratio"]:.4f}', flush=True)
    return rows


def run(sizes, solvers, repeats, seeds, capacity_factor, time_limit, milp_max_k=50):
    planner = _import_planner()
    rows = []
    milp = {}
    worst = None
    for k, m in sizes:
        for solver in solvers:
            times, ratios, gaps, rounds, bounds = [], [], [], [], []
            skipped = False
            for seed in seeds:
                names, loads, sim = random_instance(k, seed)
                reps = repeats if k <= 50 else 1
                for _ in range(reps):
                    t0 = time.perf_counter()
                    plan = planner.make_plan(names, loads, sim, m,
                                             capacity_factor=capacity_factor,
                                             solver=solver)
                    times.append(time.perf_counter() - t0)
                bound, cost = plan.lp_bound, plan.rounded_cost
                if k <= milp_max_k and (k, m, seed) not in milp:
                    milp[(k, m, seed)] = best_integral_cost(plan)
                gaps.append(cost - bound)
                bounds.append(bound)
                ratios.append(cost / bound if bound > 1e-3 else float('nan'))
                rounds.append(plan.lp.rounds)
                if plan.capacity is not None:
                    assert plan.expert_loads.max() <= plan.capacity
                bad = (cost / bound - 1) if bound > 1e-3 else (cost - bound)
                if worst is None or bad > worst[0]:
                    worst = (bad, k, m, solver, seed, bound, cost)
                if times[-1] > time_limit:
                    skipped = True
                    break
            ratio = np.nanmax(ratios) if np.any(np.isfinite(ratios)) else float('nan')
            ref = [milp.get((k, m, sd)) for sd in seeds]
            ref_ratio = (max(r / b for r, b in zip(ref, bounds)) if all(
                r is not None and np.isfinite(r) for r in ref) else float('nan'))
            rows.append(dict(k=k, m=m, solver=solver, median=float(np.median(times)),
                             milp_ratio=ref_ratio,
                             max=float(np.max(times)), n=len(times),
                             rounds=int(np.max(rounds)), ratio=ratio,
                             gap=float(np.max(gaps)), partial=skipped))
            print(f'K={k} M={m} {solver}: median {np.median(times):.3f}s, worst ratio '
                  f'{ratio:.4f}', flush=True)
    return rows, worst


def _fmt(value: float) -> str:
    return 'n/a' if not np.isfinite(value) else f'{value:.4f}'


def to_markdown(rows, worst, args) -> str:
    lines = [
        '# GEM planner scaling', '',
        f'`python tools/benchmark/planner_scaling.py {" ".join(sys.argv[1:])}`'.rstrip(),
        f'on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
        f'Python {platform.python_version()}, load average {args.load:.1f} at start (the '
        'machine is shared: timings are noisy); '
        f'capacity_factor {args.capacity_factor}, '
        f'beta 0, seeds {args.seeds}.', '',
        'Time is LP (CVXPY, column generation) + compiler, median over the runs. '
        'Ratio is rounded cost / LP bound, worst over the seeds; gap is their worst '
        'absolute difference. MILP / LP is the worst ratio of the best integral plan '
        '(HiGHS MILP, K <= 50 only) to the LP bound: the LP\'s integrality gap, which '
        'bounds what any rounding can reach.', '',
        '| K x M | solver | median s | max s | runs | CG rounds | worst ratio | worst gap '
        '| MILP / LP |',
        '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        flag = ' (stopped: over time limit)' if r['partial'] else ''
        lines.append(f"| {r['k']} x {r['m']} | {r['solver']}{flag} | {r['median']:.3f} | "
                     f"{r['max']:.3f} | {r['n']} | {r['rounds']} | {r['ratio']:.4f} | "
                     f"{r['gap']:.5f} | {_fmt(r['milp_ratio'])} |")
    # the fastest solver per size
    lines += ['', '| K x M | fastest solver | median s | target | met |', '|---|---|---|---|---|']
    for k, m in dict.fromkeys((r['k'], r['m']) for r in rows):
        best = min((r for r in rows if (r['k'], r['m']) == (k, m)), key=lambda r: r['median'])
        target = (0.1 if m == 8 and (k == 11 or str(k).startswith('UODB')) else
                  (30.0 if isinstance(k, int) and k >= 1000 else None))
        met = '-' if target is None else ('yes' if best['median'] < target else 'NO')
        tgt = '-' if target is None else f'< {target:g} s'
        lines.append(f"| {k} x {m} | {best['solver']} | {best['median']:.3f} | {tgt} | {met} |")
    if worst is not None:
        bad, k, m, solver, seed, bound, cost = worst
        kind = 'relative' if bound > 1e-3 else 'absolute'
        lines += ['', f'Worst case: K={k}, M={m}, {solver}, seed {seed}: LP bound {bound:.6f}, '
                  f'rounded {cost:.6f} ({kind} gap {bad:.4%}' if kind == 'relative' else
                  f'Worst case: K={k}, M={m}, {solver}, seed {seed}: LP bound {bound:.6f}, '
                  f'rounded {cost:.6f} (absolute gap {bad:.5f}']
        lines[-1] += '; target: 5% relative, or 0.02 absolute when the bound is ~0).'
    return '\n'.join(lines) + '\n'


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', nargs='+', default=['11x8', '50x16', '200x64', '1000x256'],
                        help='K x M sizes')
    parser.add_argument('--solvers', nargs='+', default=None,
                        help='CVXPY solvers (default: every installed LP solver among '
                        'ECOS, CLARABEL, HIGHS, SCIPY)')
    parser.add_argument('--repeats', type=int, default=10,
                        help='runs per seed for K <= 50 (larger sizes run once)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--capacity-factor', type=float, default=1.25)
    parser.add_argument('--time-limit', type=float, default=120.0,
                        help='stop a (size, solver) after a run slower than this')
    parser.add_argument('--uodb-stats', default=osp.join(ROOT, 'configs', '_base_', 'datasets',
                                                         'uodb_stats.json'),
                        help='also plan the real UODB statistics ("" to skip)')
    parser.add_argument('--milp-max-k', type=int, default=50,
                        help='solve the MILP reference up to this K')
    parser.add_argument('--out', default=osp.join(ROOT, 'tools', 'benchmark', 'results',
                                                  'planner_scaling.md'))
    return parser.parse_args()


def main():
    args = parse_args()
    args.load = os.getloadavg()[0]
    planner = _import_planner()
    sizes = [tuple(int(v) for v in s.lower().split('x')) for s in args.sizes]
    inst = planner.installed_solvers()
    solvers = args.solvers or [s for s in ('ECOS', 'CLARABEL', 'HIGHS', 'SCIPY') if s in inst]
    rows = []
    if args.uodb_stats:
        rows += run_uodb(args.uodb_stats, solvers, args.repeats * 3, args.capacity_factor)
    more, worst = run(sizes, solvers, args.repeats, args.seeds, args.capacity_factor,
                      args.time_limit, args.milp_max_k)
    rows += more
    text = to_markdown(rows, worst, args)
    print(text)
    from mmgem.utils.fileio import atomic_write  # beside the planner: no torch
    atomic_write(args.out, text)
    print(f'written to {args.out}')


if __name__ == '__main__':
    main()
