# Copyright (c) mmgem contributors. All rights reserved.
"""Quality of the GEM planner's rounding against the exact integral optimum.

For seeded instances of the families of ``planner_instances.py`` (160
random instances: 4 similarity families x 40, K 3-12, M 1-10, 50:1 loads,
capacity factor None/1/1.1/1.25/2, beta 0/0.5/1; 30 on the real UODB
statistics; 10 of 50 x 16) every instance is planned twice with
:func:`mmgem.planner.make_plan`: ``rounding='heuristic'`` and
``rounding='exact'`` (the MILP of levels 1-2 with HiGHS, whose optimum is the
best integral plan). The tables give, per family and per capacity factor,
rounded / MILP (median, p90, max) for both roundings and rounded / LP bound
(the certified bound), the number of instances where the heuristic is above
the optimum, and the check ``rounded >= bound`` on every plan. The time
table gives make_plan's wall time (LP + rounding) per size.

The planner of ``--baseline-ref`` (the planner before issue 13 by default)
rounds the same instances for comparison, and the last table times the
1000 x 256 instance of ``planner_scaling.py`` with this checkout's planner and
with the baseline's, each in fresh subprocesses, interleaved in the same run.
The baseline is read from git into a temporary folder (``git archive``) and
never copied into the repository.

Usage::

    python tools/benchmark/planner_quality.py                 # ~10-20 min on 2 cores
    python tools/benchmark/planner_quality.py --random 10 --uodb 5 --large 2 --timing-repeats 1

Finished instances are saved to ``--cache`` (resumed on the next run while
the planner's source is unchanged). The markdown goes to
``tools/benchmark/results/planner_quality.md``.
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np

if not __package__:  # run by path: make the `tools` package importable
    from mmgem.utils.tool_scripts import import_tools_beside
    import_tools_beside(__file__)
from tools.benchmark import planner_instances as pi  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HERE = osp.dirname(osp.abspath(__file__))
#: the planner this issue replaced (main before issue 13)
BASELINE_REF = 'b7138be'
TARGET_HEURISTIC = 1.05
TARGET_TIME_RATIO = 1.5
FAMILY_NAMES = ('clustered', 'uniform', 'blocks', 'labels')


def planner_digest() -> str:
    """Digest of the planner's source: cached results are valid while it holds."""
    h = hashlib.sha256()
    folder = osp.join(ROOT, 'mmgem', 'planner')
    for name in sorted(os.listdir(folder)):
        if name.endswith('.py'):
            with open(osp.join(folder, name), 'rb') as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()[:16]


def instances(args) -> List[Dict]:
    """The benchmark's instances, in a fixed order."""
    out = [pi.random_instance(f, s) for f in pi.FAMILIES for s in range(args.random)]
    if args.uodb:
        out += pi.uodb_instances(args.uodb_stats, args.uodb)
    cfs = pi.CAPACITY_FACTORS
    out += [pi.scaling_instance(50, 16, s, cfs[s % len(cfs)]) for s in range(args.large)]
    return out


def _ratio(value: float, ref: float) -> float:
    """value / ref, 1 when both are ~0 (a zero-cost optimum met exactly)."""
    if ref > 1e-12:
        return value / ref
    return 1.0 if value <= 1e-12 else float('inf')


def run_instance(ins: Dict) -> Dict:
    """Plan one instance both ways."""
    planner = pi.import_planner()
    out = dict(family=ins['family'], seed=ins['seed'], k=len(ins['names']),
               m=ins['num_experts'], capacity_factor=ins['capacity_factor'], beta=ins['beta'])
    for rounding in ('heuristic', 'exact'):
        t0 = time.perf_counter()
        plan = planner.make_plan(ins['names'], ins['loads'], ins['similarity'],
                                 ins['num_experts'], capacity_factor=ins['capacity_factor'],
                                 beta=ins['beta'], solver='ECOS', rounding=rounding)
        out[f'{rounding}_time'] = time.perf_counter() - t0
        out[f'{rounding}_cost'] = plan.rounded_cost
        out[f'{rounding}_above_bound'] = bool(plan.rounded_cost >= plan.lp_bound)
        if plan.capacity is not None:
            assert plan.expert_loads.max() <= plan.capacity
        out['bound'] = plan.lp_bound
        if rounding == 'exact':
            out['milp'] = plan.integral['value']
            out['milp_status'] = plan.integral['status']
    return out


def _stats(values) -> str:
    v = np.asarray(values, dtype=np.float64)
    return f'{np.median(v):.4f} | {np.percentile(v, 90):.4f} | {v.max():.4f}'


def quality_tables(rows: List[Dict]) -> List[str]:
    """Markdown tables of the ratios, per family and per capacity factor."""
    for r in rows:
        r['h_milp'] = _ratio(r['heuristic_cost'], r['milp'])
        r['e_milp'] = _ratio(r['exact_cost'], r['milp'])
        # a ratio to a zero bound says nothing: those are counted apart
        r['h_bound'] = r['heuristic_cost'] / r['bound'] if r['bound'] > 1e-9 else float('nan')
    lines = []
    head = ('| {} | n | heuristic / MILP median | p90 | max | above optimum | exact / MILP max '
            '| heuristic / LP bound median | max |')
    for key, title in (('family', 'family'), ('capacity_factor', 'capacity factor')):
        lines += ['', head.format(title), '|---|---|---|---|---|---|---|---|---|']
        groups = {}
        for r in sorted(rows, key=lambda r: -1 if r[key] is None else (
                r[key] if key == 'capacity_factor' else 0)):
            groups.setdefault(str(r[key]), []).append(r)
        groups['all'] = rows
        for name, rs in groups.items():
            above = sum(r['h_milp'] > 1 + 1e-9 for r in rs)
            hb = np.array([r['h_bound'] for r in rs])
            hb_text = (f'{np.nanmedian(hb):.4f} | {np.nanmax(hb):.4f}'
                       if np.isfinite(hb).any() else 'n/a | n/a')
            lines.append(
                f"| {name} | {len(rs)} | {_stats([r['h_milp'] for r in rs])} | {above} | "
                f"{max(r['e_milp'] for r in rs):.6f} | {hb_text} |")
    zero = [r for r in rows if r['bound'] <= 1e-9 and r['milp'] > 1e-12]
    lines += ['', f'{len(zero)} instance(s) have an LP bound of 0 but a positive integral '
              'optimum (the integrality gap of a zero bound: fractional expert counts fit '
              'every dataset on its own experts, whole counts cannot); they are left out of '
              'the rounded / LP bound columns'
              + (': ' + ', '.join(f"{r['family']}/{r['seed']} (optimum {r['milp']:.4f}, "
                                   f"rounded {r['heuristic_cost']:.4f})" for r in zero)
                 if zero else '') + '.']
    return lines


def _size(r: Dict) -> str:
    if r['family'] == 'uodb':
        return 'UODB 11 x 2-16'
    if r['family'] in FAMILY_NAMES:
        return 'random 3-12 x 1-10'
    return f"{r['k']} x {r['m']}"


def time_table(rows: List[Dict], scaling: List[Dict]) -> List[str]:
    """Wall time of make_plan per size."""
    lines = ['', '| K x M | instances | heuristic s (median / max) | exact s (median / max) |',
             '|---|---|---|---|']
    sizes: Dict[str, List[Dict]] = {}
    for r in rows:
        sizes.setdefault(_size(r), []).append(r)
    for name, rs in sizes.items():
        h = [r['heuristic_time'] for r in rs]
        e = [r['exact_time'] for r in rs]
        lines.append(f'| {name} | {len(rs)} | {np.median(h):.3f} / {np.max(h):.3f} | '
                     f'{np.median(e):.3f} / {np.max(e):.3f} |')
    for s in scaling:
        lines.append(f"| {s['size']} | {s['n']} | {s['median']:.3f} / {s['max']:.3f} | "
                     'n/a (K > 60) |')
    return lines


def run_scaling(sizes, seeds) -> List[Dict]:
    """Heuristic plans of the larger sizes (no MILP: K > 60)."""
    planner = pi.import_planner()
    out = []
    for k, m in sizes:
        times, ratios = [], []
        for seed in seeds:
            ins = pi.scaling_instance(k, m, seed)
            t0 = time.perf_counter()
            plan = planner.make_plan(ins['names'], ins['loads'], ins['similarity'], m,
                                     capacity_factor=1.25, solver='ECOS')
            times.append(time.perf_counter() - t0)
            ratios.append(plan.rounded_cost / plan.lp_bound)
            assert plan.rounded_cost >= plan.lp_bound
        out.append(dict(size=f'{k} x {m}', n=len(times), median=float(np.median(times)),
                        max=float(np.max(times)), ratio=float(np.max(ratios))))
        print(f'{k} x {m}: {np.median(times):.2f} s, rounded / bound <= {max(ratios):.4f}',
              flush=True)
    return out


TIMING_SCRIPT = r'''
import json, sys, time, types
root = sys.argv[1]
pkg = types.ModuleType('mmgem'); pkg.__path__ = [root + '/mmgem']; sys.modules['mmgem'] = pkg
from tools.benchmark import planner_instances as pi
from mmgem.planner import make_plan
ins = pi.scaling_instance(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
w, c = time.perf_counter(), time.process_time()
plan = make_plan(ins['names'], ins['loads'], ins['similarity'], ins['num_experts'],
                 capacity_factor=ins['capacity_factor'], solver='ECOS')
w, c = time.perf_counter() - w, time.process_time() - c
print(json.dumps(dict(wall=w, cpu=c, cost=plan.rounded_cost, bound=plan.lp_bound)))
'''


BASELINE_SCRIPT = r'''
import json, sys, types
root = sys.argv[1]
pkg = types.ModuleType('mmgem'); pkg.__path__ = [root + '/mmgem']; sys.modules['mmgem'] = pkg
from mmgem.planner import make_plan
out = {}
for key, ins in json.load(open(sys.argv[2])).items():
    plan = make_plan(ins['names'], ins['loads'], ins['similarity'], ins['num_experts'],
                     capacity_factor=ins['capacity_factor'], beta=ins['beta'], solver='ECOS')
    out[key] = plan.rounded_cost
print(json.dumps(out))
'''


def run_baseline_quality(ref: str, todo: List[Dict]) -> Dict[str, float]:
    """Rounded cost of every instance with the baseline planner (a subprocess)."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    with tempfile.TemporaryDirectory() as tmp:
        baseline_checkout(ref, tmp)
        path = osp.join(tmp, 'instances.json')
        with open(path, 'w', encoding='utf-8') as f:
            json.dump({f'{i["family"]}/{i["seed"]}': dict(
                i, similarity=np.asarray(i['similarity']).tolist()) for i in todo}, f)
        out = subprocess.run([sys.executable, '-c', BASELINE_SCRIPT, tmp, path], check=True,
                             capture_output=True, text=True, env=env, cwd=tmp)
    return json.loads(out.stdout.strip().splitlines()[-1])


def baseline_lines(rows: List[Dict], costs: Dict[str, float], ref: str) -> List[str]:
    """The baseline planner's rounded / MILP on the same instances."""
    lines = ['', f'The planner of {ref} (the baseline) on the same instances, rounded / MILP:', '',
             '| family | n | median | p90 | max | above optimum |', '|---|---|---|---|---|---|']
    groups: Dict[str, List[float]] = {}
    for r in rows:
        ratio = _ratio(costs[f"{r['family']}/{r['seed']}"], r['milp'])
        groups.setdefault(r['family'], []).append(ratio)
    groups['all'] = [v for values in groups.values() for v in values]
    for name, ratios in groups.items():
        above = sum(v > 1 + 1e-9 for v in ratios)
        lines.append(f'| {name} | {len(ratios)} | {_stats(ratios)} | {above} |')
    return lines


def baseline_checkout(ref: str, folder: str) -> str:
    """The planner of ``ref`` (and what it imports) extracted from git."""
    paths = ['mmgem/planner', 'mmgem/utils/fileio.py', 'mmgem/utils/__init__.py']
    archive = subprocess.run(['git', '-C', ROOT, 'archive', ref] + paths, check=True,
                             capture_output=True).stdout
    subprocess.run(['tar', '-x', '-C', folder], input=archive, check=True)
    sha = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', ref], check=True,
                         capture_output=True, text=True).stdout.strip()
    return sha


def run_timing(ref: str, k: int, m: int, repeats: int) -> Dict:
    """1000 x 256 with this planner and the baseline's, interleaved subprocesses."""
    # the instances come from this checkout's tools package either way
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONHASHSEED='0', PYTHONPATH=ROOT)
    res = dict(new=[], old=[])
    with tempfile.TemporaryDirectory() as tmp:
        sha = baseline_checkout(ref, tmp)
        for rep in range(repeats):
            for which, root in (('old', tmp), ('new', ROOT)):
                out = subprocess.run([sys.executable, '-c', TIMING_SCRIPT, root, str(k),
                                      str(m), '0'], check=True, capture_output=True, text=True,
                                     env=env, cwd=tmp)
                res[which].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f'{k} x {m} {which} run {rep + 1}: {res[which][-1]["wall"]:.2f} s',
                      flush=True)
    res['ref'], res['sha'] = ref, sha
    return res


def timing_lines(t: Dict, k: int, m: int) -> List[str]:
    new_w = float(np.median([r['wall'] for r in t['new']]))
    old_w = float(np.median([r['wall'] for r in t['old']]))
    new_c = float(np.median([r['cpu'] for r in t['new']]))
    old_c = float(np.median([r['cpu'] for r in t['old']]))
    ratio = new_c / old_c
    met = 'yes' if ratio <= TARGET_TIME_RATIO else 'NO'
    rc_new = max(r['cost'] / r['bound'] for r in t['new'])
    rc_old = max(r['cost'] / r['bound'] for r in t['old'])
    return ['', f'{k} x {m} (capacity factor 1.25, seed 0), make_plan in fresh subprocesses, '
            f'{len(t["new"])} interleaved runs each, median:', '',
            '| planner | wall s | CPU s | rounded / LP bound |', '|---|---|---|---|',
            f'| baseline {t["ref"]} ({t["sha"]}) | {old_w:.2f} | {old_c:.2f} | {rc_old:.4f} |',
            f'| this checkout | {new_w:.2f} | {new_c:.2f} | {rc_new:.4f} |',
            '', f'this / baseline CPU time: **{ratio:.2f}x** (target <= {TARGET_TIME_RATIO}: '
            f'{met}); wall {new_w / old_w:.2f}x.']


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--random', type=int, default=40, help='instances per random family')
    parser.add_argument('--uodb', type=int, default=30, help='UODB instances')
    parser.add_argument('--large', type=int, default=10, help='50 x 16 instances (MILP too)')
    parser.add_argument('--scaling', nargs='*', default=['200x64'],
                        help='larger sizes timed with the heuristic only')
    parser.add_argument('--timing-size', default='1000x256')
    parser.add_argument('--timing-repeats', type=int, default=2)
    parser.add_argument('--baseline-ref', default=BASELINE_REF,
                        help='git ref of the planner to time against')
    parser.add_argument('--uodb-stats', default=osp.join(ROOT, 'configs', '_base_', 'datasets',
                                                         'uodb_stats.json'))
    parser.add_argument('--cache', default=osp.join(ROOT, 'work_dirs', 'planner_quality.json'),
                        help='finished instances (resumed while the planner is unchanged)')
    parser.add_argument('--out', default=osp.join(HERE, 'results', 'planner_quality.md'))
    return parser.parse_args()


def main():
    args = parse_args()
    load = os.getloadavg()[0]
    pi.import_planner()
    from mmgem.utils.fileio import atomic_write  # beside the planner: no torch
    digest = planner_digest()
    cache = {}
    if osp.isfile(args.cache):
        with open(args.cache, encoding='utf-8') as f:
            stored = json.load(f)
        if stored.get('planner') == digest:
            cache = stored['rows']
    planner = sys.modules['mmgem.planner']
    planner.make_plan(['a', 'b'], [10, 20], np.eye(2), 2)  # warm up imports and CVXPY
    rows = []
    todo = instances(args)
    resumed = 0
    for i, ins in enumerate(todo):
        key = f'{ins["family"]}/{ins["seed"]}'
        resumed += key in cache
        if key not in cache:
            cache[key] = run_instance(ins)
            atomic_write(args.cache, json.dumps(dict(planner=digest, rows=cache)))
        rows.append(cache[key])
        r = cache[key]
        print(f'[{i + 1}/{len(todo)}] {key} K={r["k"]} M={r["m"]} cf={r["capacity_factor"]}: '
              f'heuristic / MILP {_ratio(r["heuristic_cost"], r["milp"]):.4f}', flush=True)
    base_key = f'baseline {args.baseline_ref}'
    if base_key not in cache:
        print(f'baseline {args.baseline_ref} on the {len(todo)} instances ...', flush=True)
        cache[base_key] = run_baseline_quality(args.baseline_ref, todo)
        atomic_write(args.cache, json.dumps(dict(planner=digest, rows=cache)))
    scaling = run_scaling([tuple(int(v) for v in s.split('x')) for s in args.scaling], [0, 1, 2])
    tk, tm = (int(v) for v in args.timing_size.split('x'))
    timing = run_timing(args.baseline_ref, tk, tm, args.timing_repeats)

    bad_bound = [f'{r["family"]}/{r["seed"]}' for r in rows
                 if not (r['heuristic_above_bound'] and r['exact_above_bound'])]
    not_opt = [f'{r["family"]}/{r["seed"]}' for r in rows if r['milp_status'] != 'optimal']
    text = ['# GEM planner quality: rounding against the integral optimum', '',
            f'`python tools/benchmark/planner_quality.py {" ".join(sys.argv[1:])}`'.rstrip(),
            f'on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python '
            f'{platform.python_version()}, load average {load:.1f} at start (a shared machine: '
            'times are noisy); LP solver ECOS.', '',
            f'{len(rows)} instances. MILP = the exact optimum of levels 1-2 (HiGHS, '
            "`rounding='exact'`); LP bound = the certified (Lagrangian) bound. "
            f'Target: heuristic / MILP <= {TARGET_HEURISTIC}, exact / MILP = 1.000. '
            f'rounded >= LP bound on every plan: '
            f'{"yes" if not bad_bound else "NO: " + ", ".join(bad_bound)}; MILP proved optimal '
            f'on {len(rows) - len(not_opt)} of {len(rows)}.'
            + (f' {resumed} instance(s) (and their times) come from the cache of an earlier run '
               'of the same planner code.' if resumed else '')]
    text += quality_tables(rows)
    h = max(r['h_milp'] for r in rows)
    e = max(r['e_milp'] for r in rows)
    text += ['', f'Worst heuristic / MILP: **{h:.4f}** (target <= {TARGET_HEURISTIC}: '
             f'{"yes" if h <= TARGET_HEURISTIC else "NO"}); worst exact / MILP: **{e:.6f}**.']
    text += baseline_lines(rows, cache[base_key], args.baseline_ref)
    text += ['', '## Time per size (make_plan: LP + rounding)'] + time_table(rows, scaling)
    text += ['', f'## {tk} x {tm} against the baseline planner'] + timing_lines(timing, tk, tm)
    out = '\n'.join(text) + '\n'
    print(out)
    atomic_write(args.out, out)
    print(f'written to {args.out}')


if __name__ == '__main__':
    main()
