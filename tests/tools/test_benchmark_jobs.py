# Copyright (c) mmgem contributors. All rights reserved.
"""The table's and the leave-one-domain-out benchmark's jobs, made by the
one helper ``mini_uodb_runs.method_seed_jobs``, are the jobs each script
made with its own loop: the same names, cells, configs, overrides and
fingerprints (so resuming keeps every saved cell). No data, no training."""
import json

from tools.benchmark import mini_uodb_loo as loo
from tools.benchmark import mini_uodb_runs as runs
from tools.benchmark import mini_uodb_table as table


def _by_hand(args, data_fp, cell_of):
    """The scripts' former loop: per seed, one cell per method, grouped."""
    jobs = []
    for seed in args.seeds:
        cells = [dict(key=f'{m}_s{seed}', iters=args.iters, seed=seed, **cell_of(m))
                 for m in args.methods]
        jobs += runs.group_jobs(cells, args.results_dir, args.work_dir, args.data_dir, data_fp,
                                args.keep_checkpoints)
    return jobs


def _paths(tmp_path):
    return ['--results-dir', str(tmp_path / 'cells'), '--work-dir', str(tmp_path / 'work'),
            '--data-dir', str(tmp_path / 'data'), '--seeds', '0', '1']


def _plain(jobs):
    return json.loads(json.dumps(jobs))


def test_table_jobs_are_its_former_loops(tmp_path):
    args = table.parse_args(_paths(tmp_path) + ['--methods', 'dino', 'gem', 'gem_unknown',
                                                '--keep-checkpoints'])
    got = _plain(table.make_jobs(args, 'data-fp'))
    want = _plain(_by_hand(args, 'data-fp', lambda m: dict(
        config=runs.method_config(m, 2), meta=dict(method=m),
        overrides=runs.method_overrides(m))))
    assert got == want
    # GEM's two protocols share one training per seed; DINO trains alone
    assert [[e['key'] for e in j['evals']] for j in got] == [
        ['dino_s0'], ['gem_s0', 'gem_unknown_s0'], ['dino_s1'], ['gem_s1', 'gem_unknown_s1']]
    assert all(j['keep_checkpoint'] for j in got)


def test_loo_jobs_are_its_former_loops(tmp_path):
    args = loo.parse_args(_paths(tmp_path) + ['--methods', 'dino', 'gem'])
    got = _plain(loo.make_jobs(args, 'data-fp'))

    def cell_of(m):
        config = loo.method_config(m)
        return dict(config=config, meta=dict(method=m, holdout='watercolor'),
                    overrides=loo.loo_overrides(config, 'watercolor'))

    assert got == _plain(_by_hand(args, 'data-fp', cell_of))
    assert [j['name'] for j in got] == ['dino_s0', 'gem_s0', 'dino_s1', 'gem_s1']
    assert len({e['fingerprint'] for j in got for e in j['evals']}) == 4
