# Copyright (c) mmgem contributors. All rights reserved.
"""The mini-UODB benchmarks' machinery at tiny scale: cells are saved,
resumed without retraining, re-rendered without data; GEM's two protocols
share one training run; the curve, few-shot adaptation and ablation paths
work end to end on real MMEngine runners (one or two iterations)."""
import copy
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from scipy import stats

from mmgem.models.layers.moe_ffn import MoEFFN
from tools.benchmark.cell_store import CellStore


@pytest.fixture(scope='module')
def table():
    from tools.benchmark import mini_uodb_table

    return mini_uodb_table


@pytest.fixture(scope='module')
def runs(table):
    from tools.benchmark import mini_uodb_runs
    return mini_uodb_runs


def _shrink_cells(runs, patch) -> None:
    """Cells as the benchmarks make them, only smaller: batch 2, 2 test
    images per domain, 1 planner probe image, and the config text not
    yapf-formatted (MMEngine formats it for every log, dump and checkpoint:
    most of a tiny cell's time)."""
    build = runs.build_cfg

    def small(*args, **kwargs):
        cfg = build(*args, **kwargs)
        cfg = Config(cfg.to_dict(), filename=cfg.filename, format_python_code=False)
        cfg.train_dataloader.batch_size = 2
        test = cfg.test_dataloader.dataset
        test.dataset_indices = {n: 2 for n in test.get('select') or test.dataset_names}
        for hook in cfg.get('custom_hooks', []):
            if hook.type == 'GEMPlannerHook':
                hook.num_probe_images = 1
        return cfg

    patch.setattr(runs, 'build_cfg', small)


@pytest.fixture(autouse=True)
def _small_cells(runs, monkeypatch):
    """Small cells (see :func:`_shrink_cells`), 1 torch thread."""
    _shrink_cells(runs, monkeypatch)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _args(tmp_path, data_root, *extra):
    return ['--data-version', '1', '--scale', 'tiny', '--data-dir', str(data_root),
            '--work-dir', str(tmp_path / 'work'), '--results-dir', str(tmp_path / 'cells'),
            '--out', str(tmp_path / 'table.md'), '--seeds', '0', '--threads', '1',
            '--parallel', '1', *extra]


class Calls:
    """Counts Runner.train / Runner.test calls (and can forbid building)."""

    def __init__(self, monkeypatch):
        self.train = self.test = 0
        train, test = Runner.train, Runner.test

        def counted_train(runner):
            self.train += 1
            return train(runner)

        def counted_test(runner):
            self.test += 1
            return test(runner)

        monkeypatch.setattr(Runner, 'train', counted_train)
        monkeypatch.setattr(Runner, 'test', counted_test)


@pytest.fixture(scope='module')
def table_run(table, runs, mini_uodb_root, tmp_path_factory):
    """The table's DINO and GEM cells (1 iteration, seed 0, checkpoints
    kept), trained and tested once for the module: the table test checks the
    run, the reuse test copies its GEM cell.

    Returns:
        SimpleNamespace: ``tmp`` (its folder), ``args`` (the table's command
        line) and ``calls`` (Runner.train and Runner.test calls it made).
    """
    tmp = tmp_path_factory.mktemp('table_run')
    args = _args(tmp, mini_uodb_root, '--iters', '1', '--methods', 'dino', 'gem',
                 '--keep-checkpoints')
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        _shrink_cells(runs, patch)
        calls = Calls(patch)
        assert table.main(args) == 0
    torch.set_num_threads(threads)
    return SimpleNamespace(tmp=tmp, args=args, calls=(calls.train, calls.test))


def _assert_rerun_builds_nothing(main, args, cells_dir, keys, monkeypatch):
    """Run ``main(args)`` again with every cell saved: no Runner is built and
    the saved cells' bytes stay as they were; returns those bytes by key."""
    saved = {k: (cells_dir / f'{k}.json').read_bytes() for k in keys}

    def forbidden(*a, **k):
        raise AssertionError('a saved cell was run again')

    # (a context restores the classmethod itself, which GEMRunner's from_cfg
    # calls through super(); a saved bound method would build a plain Runner)
    with monkeypatch.context() as patch:
        patch.setattr(Runner, 'from_cfg', forbidden)
        assert main(args) == 0
    assert {k: (cells_dir / f'{k}.json').read_bytes() for k in saved} == saved
    return saved


def test_table_saves_resumes_and_renders(table, runs, table_run, monkeypatch):
    tmp_path, args = table_run.tmp, table_run.args
    assert table_run.calls == (2, 2)
    store = CellStore(str(tmp_path / 'cells'))
    assert store.keys() == ['dino_s0', 'gem_s0']
    cells = store.all()
    for cell in cells.values():
        assert cell['iters'] == 1 and cell['seed'] == 0
        assert {f'uodb/{n}_bbox_mAP' for n in cell['names']} <= set(cell['metrics'])
        assert cell['fingerprint'] and cell['train_s'] > 0 and cell['lengths'][0] == 48
    assert cells['gem_s0']['plan']['dataset_names'] == cells['gem_s0']['names']
    gem = cells['gem_s0']  # the utilisation is the layer counts summed, not stored
    assert 'utilisation' not in gem and np.asarray(gem['layer_counts']).shape[1:] == (6, 4)
    assert table.expert_utilisation(gem).shape == (6, 4)
    assert not [f for f in os.listdir(tmp_path / 'cells') if f.startswith('.')]
    report = (tmp_path / 'table.md').read_text()
    assert '| DINO (mixed) | 1 |' in report and '| GEM (dataset known) | 1 |' in report
    assert 'GEM (dataset known) − DINO (mixed)' in report
    # resume: every cell saved, so nothing is built, trained or tested
    saved = _assert_rerun_builds_nothing(table.main, args, tmp_path / 'cells', cells,
                                         monkeypatch)

    # a lost cell whose training finished: evaluated again from its checkpoint
    calls = Calls(monkeypatch)
    os.remove(tmp_path / 'cells' / 'dino_s0.json')
    assert table.main(args) == 0
    assert (calls.train, calls.test) == (0, 1)
    assert (tmp_path / 'cells' / 'gem_s0.json').read_bytes() == saved['gem_s0']
    assert json.loads((tmp_path / 'cells' / 'dino_s0.json').read_text())['metrics'] == \
        cells['dino_s0']['metrics']

    # render only: no data needed, the same report
    report = (tmp_path / 'table.md').read_text()
    os.remove(tmp_path / 'table.md')
    render = _args(tmp_path, tmp_path / 'no_data', '--iters', '1', '--methods', 'dino', 'gem',
                   '--render')
    assert table.main(render) == 0
    assert (tmp_path / 'table.md').read_text() == report


def test_gem_protocols_share_one_training(runs, tmp_path, mini_uodb_root):
    def cell(method, seed=0, planner=None):
        return dict(key=f'{method}_{seed}', config=runs.method_config(method, 1), iters=1,
                    seed=seed, planner=planner)

    def jobs(*cells):
        return runs.group_jobs(cells, str(tmp_path / 'c'), str(tmp_path / 'w'),
                               str(mini_uodb_root), 'data')

    shared = jobs(cell('gem'), cell('gem_unknown'), cell('dino'))
    assert [[e['key'] for e in j['evals']] for j in shared] == [['gem_0', 'gem_unknown_0'],
                                                                ['dino_0']]
    assert shared[0]['evals'][0]['fingerprint'] != shared[0]['evals'][1]['fingerprint']
    apart = jobs(cell('gem'), cell('gem_unknown', seed=1), cell('gem', planner=dict(beta=1.0)))
    assert len(apart) == 3
    for version in (1, 2):  # the dataset-unknown configs differ only in testing
        cfgs = [runs.build_cfg(runs.method_config(m, version), '.', 5, 0, 'w')
                for m in ('gem', 'gem_unknown')]
        assert runs.train_fingerprint(cfgs[0]) == runs.train_fingerprint(cfgs[1])
        assert cfgs[1].model.test_dataset_known is False


def test_a_rows_test_overrides_stay_in_its_cell(runs, tmp_path, mini_uodb_root):
    # a row with test-only overrides listed before its dataset-known row: the
    # known cell must be the cell it is when listed first (no leak of the
    # first cell's overrides into the job's), and both still share one training
    def cell(method):
        return dict(key=method, config=runs.method_config(method, 1), iters=1, seed=0,
                    overrides=runs.method_overrides(method))

    def fingerprints(*methods):
        (job, ) = runs.group_jobs([cell(m) for m in methods], str(tmp_path / 'c'),
                                  str(tmp_path / 'w'), str(mini_uodb_root), 'data')
        return {e['key']: e['fingerprint'] for e in job['evals']}

    assert runs.method_overrides('soft_moe_unknown')  # the case: test-only overrides
    known_first = fingerprints('soft_moe', 'soft_moe_unknown')
    unknown_first = fingerprints('soft_moe_unknown', 'soft_moe')
    assert unknown_first == known_first
    assert fingerprints('soft_moe') == {'soft_moe': known_first['soft_moe']}
    assert runs.training_overrides(dict(runs.UNKNOWN, **{'model.x': 1})) == {'model.x': 1}


def _refit_jobs(runs, tmp_path, data_root, refit):
    """GEM's dataset-known cell and a dataset-unknown cell refitted by
    ``refit`` (v1, 1 iteration, checkpoint kept), grouped into jobs."""
    cells = [dict(key='gem_s0', config=runs.method_config('gem', 1), iters=1, seed=0),
             dict(key='gem_refit_unknown_s0', config=runs.method_config('gem_refit_unknown', 1),
                  iters=1, seed=0, refit=refit)]
    return runs.group_jobs(cells, str(tmp_path / 'cells'), str(tmp_path / 'work'),
                           str(data_root), 'data', keep_checkpoint=True)


def test_refit_spec_is_in_the_cell_fingerprint_not_the_training(runs, table, tmp_path,
                                                                mini_uodb_root):
    from tools.benchmark.cell_store import fingerprint
    spec = dict(iters=5, max_images=2)
    (job, ) = _refit_jobs(runs, tmp_path, mini_uodb_root, spec)  # one training for both
    (other, ) = _refit_jobs(runs, tmp_path, mini_uodb_root, dict(spec, iters=6))
    (plain, ) = _refit_jobs(runs, tmp_path, mini_uodb_root, None)
    assert job['train_fingerprint'] == other['train_fingerprint'] == plain['train_fingerprint']
    fps = [{e['key']: e['fingerprint'] for e in j['evals']} for j in (job, other, plain)]
    assert fps[0]['gem_s0'] == fps[1]['gem_s0'] == fps[2]['gem_s0']
    refit_fps = {f['gem_refit_unknown_s0'] for f in fps}
    assert len(refit_fps) == 3  # another spec, or none: another cell
    assert job['evals'][1]['refit'] == dict(runs.refit_spec({}), iters=5, max_images=2)
    # a cell without a refit keeps the fingerprint it had before refits existed
    for e in plain['evals']:
        assert 'refit' not in e
        ecfg = runs._job_cfg(plain, e['config'], e['overrides'])
        assert e['fingerprint'] == fingerprint(dict(train=plain['train_fingerprint'],
                                                    test=runs.config_fingerprint(ecfg)))
    with pytest.raises(ValueError, match='unknown option'):
        runs.refit_spec(dict(steps=5))
    # the table's row: GEM's training, the fit tool's defaults with balanced softmax
    args = table.parse_args(['--data-version', '1', '--scale', 'tiny', '--iters', '1',
                             '--seeds', '0', '--data-dir', str(mini_uodb_root),
                             '--work-dir', str(tmp_path / 'w'),
                             '--results-dir', str(tmp_path / 'c'),
                             '--methods', 'gem', 'gem_unknown', 'gem_refit_unknown'])
    (row_job, ) = table.make_jobs(args, 'data')
    refit = {e['key']: e.get('refit') for e in row_job['evals']}
    assert refit == {'gem_s0': None, 'gem_unknown_s0': None,
                     'gem_refit_unknown_s0': runs.refit_spec(dict(loss_balance='balanced_softmax'))}


def test_refit_cell_tests_the_refitted_classifier(runs, tmp_path, mini_uodb_root, monkeypatch):
    """A cell with a refit spec: the job's trained checkpoint is refitted
    (classifier tensors only) into the cell's work dir, and the test runs
    on that checkpoint; the cell records the fit."""
    from mmengine.hooks import Hook

    from mmgem.engine.runner import load_checkpoint_file
    from tools.analysis_tools import fit_domain_classifier as fit
    prefix = 'domain_classifier.'
    spec = dict(iters=5, max_images=2, fit_batch=8)
    (job, ) = _refit_jobs(runs, tmp_path, mini_uodb_root, spec)
    job['evals'] = job['evals'][1:]  # the refit cell alone (one test run)
    trained, tested = {}, {}
    refit = fit.refit_domain_classifier

    def spy_refit(cfg, checkpoint, out, **kwargs):  # the trained tensors, before the refit
        state = load_checkpoint_file(checkpoint, map_location='cpu')['state_dict']
        trained.update({k: v.clone() for k, v in state.items()})
        return refit(cfg, checkpoint, out, **kwargs)

    class Tested(Hook):
        def before_test(self, runner):  # after the checkpoint was loaded
            tested.update({k: v.detach().clone()
                           for k, v in runner.model.state_dict().items()})

    build = runs.build_runner

    def build_spied(cfg):
        runner = build(cfg)
        runner.register_hook(Tested())
        return runner

    monkeypatch.setattr(fit, 'refit_domain_classifier', spy_refit)
    monkeypatch.setattr(runs, 'build_runner', build_spied)
    assert runs.run_job(job, threads=1) == ['gem_refit_unknown_s0']
    path = tmp_path / 'work' / 'gem_s0' / 'test_gem_refit_unknown_s0' / runs.REFIT_CHECKPOINT
    new = load_checkpoint_file(str(path), map_location='cpu')['state_dict']
    classifier = [k for k in trained if k.startswith(prefix)]
    assert classifier and set(new) == set(trained)
    for key, value in trained.items():
        if key.startswith(prefix):
            assert not torch.equal(value, new[key]), key  # refitted
        else:
            assert torch.equal(value, new[key]), key  # untouched
    for key in classifier:  # the test ran the refitted classifier
        assert torch.equal(tested[key], new[key]), key
    old = load_checkpoint_file(runs.job_checkpoint(job), map_location='cpu')['state_dict']
    assert all(torch.equal(old[k], v) for k, v in trained.items())  # the input kept as it was
    cell = CellStore(str(tmp_path / 'cells')).load('gem_refit_unknown_s0')
    assert cell['fingerprint'] == job['evals'][0]['fingerprint']
    assert cell['config'].endswith('_dataset-unknown.py')
    record = cell['refit']
    assert record['spec'] == runs.refit_spec(spec)
    assert record['fit_images'] == [2] * 6 and len(record['recall']) == 6
    assert record['balanced_accuracy'] == pytest.approx(np.mean(record['recall']))
    assert record['checkpoint_balanced_accuracy'] is not None
    assert record['fit_s'] > 0 and record['total_s'] >= record['extract_s'] + record['fit_s']
    assert 'uodb/domain_balanced_acc' in cell['metrics']


def test_every_method_has_a_dataset_unknown_row_sharing_its_training(runs, tmp_path,
                                                                     mini_uodb_root):
    """Rows per method: dataset known and unknown; GEM's 2 x 2 table."""
    cells = [dict(key=f'{m}_0', config=runs.method_config(m, 2), iters=1, seed=0,
                  overrides=runs.method_overrides(m), refit=runs.method_refit(m))
             for m in runs.METHODS]
    jobs = runs.group_jobs(cells, str(tmp_path / 'c'), str(tmp_path / 'w'),
                           str(mini_uodb_root), 'data')
    assert sorted(sorted(e['key'] for e in j['evals']) for j in jobs) == sorted([
        ['damex_0', 'damex_unknown_0'], ['dino_0', 'dino_unknown_0'],
        ['moe_0', 'moe_unknown_0'],
        *[[f'{r}_0', f'{r}_unknown_0'] for r in ('soft_moe', 'sinkhorn', 'moe_pp', 'remoe',
                                                   'mumoe')],
        ['gem_0', 'gem_predicted_labels_0', 'gem_refit_unknown_0', 'gem_soft_unknown_0',
         'gem_true_routing_names_0', 'gem_unknown_0']])
    protocol = {}
    for m in runs.METHODS:
        cfg = runs.build_cfg(runs.method_config(m, 2), '.', 5, 0, 'w', runs.method_overrides(m))
        space = cfg.model.get('test_label_space') or (
            'dataset' if cfg.model.get('test_dataset_known', True) else 'unified')
        protocol[m] = (cfg.model.get('test_dataset_known', True), space,
                       cfg.test_evaluator.get('label_mapping', 'offset'))
    for m in ('dino', 'moe', 'damex', 'gem'):
        assert protocol[m] == (True, 'dataset', 'offset')
        assert protocol[f'{m}_unknown'] == (False, 'unified', 'name')
    assert protocol['gem_true_routing_names'] == (True, 'unified', 'name')
    assert protocol['gem_predicted_labels'] == (False, 'dataset', 'offset')
    assert protocol['gem_soft_unknown'] == (False, 'unified', 'name')
    assert protocol['gem_refit_unknown'] == (False, 'unified', 'name')
    soft = runs.build_cfg(runs.method_config('gem_soft_unknown', 2), '.', 5, 0, 'w',
                          runs.method_overrides('gem_soft_unknown'))
    assert soft.model.soft_routing == dict(topk=2)


def test_a_cell_of_another_setup_is_refused(runs, tmp_path, mini_uodb_root):
    job = runs.group_jobs([dict(key='dino_s0', config=runs.method_config('dino', 1), iters=1,
                                seed=0)], str(tmp_path), str(tmp_path / 'w'),
                          str(mini_uodb_root), 'data')[0]
    CellStore(str(tmp_path)).save('dino_s0', dict(fingerprint='0123456789abcdef'))
    with pytest.raises(ValueError, match=r'dino_s0\.json was made by a different setup'):
        runs.pending(job)
    with pytest.raises(ValueError, match='holds mini-UODB version 1'):
        runs.ensure_data(str(mini_uodb_root), 2, 'tiny')


def test_parallel_jobs_run_as_subprocesses(runs, tmp_path, mini_uodb_root):
    """--parallel starts one process per job; a failing job is reported by
    name (its log kept), the others still finish."""
    def job(key):
        return runs.group_jobs([dict(key=key, config=runs.method_config('dino', 1), iters=1,
                                     seed=0)], str(tmp_path / 'cells'), str(tmp_path / 'w'),
                               str(mini_uodb_root), 'data')[0]

    done, broken = job('done'), job('broken')
    CellStore(str(tmp_path / 'cells')).save('done', dict(fingerprint=done['evals'][0][
        'fingerprint']))
    broken['train']['config'] = str(tmp_path / 'missing.py')
    lines = []
    failed = runs._run_subprocesses([done, broken], 2, 1, lines.append)
    assert failed == ['broken']
    assert sum('started' in line for line in lines) == 2
    assert 'missing.py' in (tmp_path / 'w' / 'broken.log').read_text()
    assert (tmp_path / 'w' / 'done.log').is_file()


def _fake_cell(names, aps, seed, **extra):
    metrics = {f'uodb/{n}_bbox_mAP': v for n, v in zip(names, aps)}
    metrics.update({f'uodb/{n}_bbox_mAP_50': v + 0.1 for n, v in zip(names, aps)})
    cell = dict(fingerprint='f', names=list(names), display=list(names), seed=seed, iters=7,
                train_fingerprint=f't{seed}{aps[0]}', train_s=60.0, test_s=6.0, iter_s=1.0,
                iter_median_s=0.8, lengths=[10] * len(names), train_names=list(names),
                metrics=metrics, utilisation=None, plan=None,
                machine=dict(machine='x86_64', cpus=2, threads=1, torch='t'))
    cell.update(extra)
    return cell


def test_render_intervals_and_paired_differences(table, runs, tmp_path):
    names = list(runs.DATA_VERSIONS[2]['names'])
    rng = np.random.default_rng(1)
    gem = {s: rng.uniform(0.1, 0.5, len(names)) for s in range(3)}
    dino = {s: gem[s] - rng.uniform(0, 0.1, len(names)) for s in range(3)}
    store = CellStore(str(tmp_path / 'cells'))
    for s in range(3):
        store.save(f'gem_s{s}', _fake_cell(names, gem[s].tolist(), s))
        store.save(f'dino_s{s}', _fake_cell(names, dino[s].tolist(), s))
    args = table.parse_args(['--data-version', '2', '--iters', '7', '--render', '--methods',
                             'dino', 'gem', '--results-dir', str(tmp_path / 'cells')])
    report = table.render(args)
    rare = runs.rarest(2, 'small')
    assert rare == ['clipart', 'watercolor']
    i = [names.index(n) for n in ('street', 'signs')]
    d = np.array([gem[s][i].mean() - dino[s][i].mean() for s in range(3)])  # same seed
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    want = f'{100 * d.mean():+.1f} ± {100 * half:.1f} (n=3)'
    row = next(line for line in report.splitlines()
               if line.startswith('| GEM (dataset known) − DINO (mixed)'))
    assert row.split(' | ')[3].startswith(want)
    m = np.array([gem[s].mean() for s in range(3)])
    half = stats.t.ppf(0.975, 2) * m.std(ddof=1) / np.sqrt(3)
    gem_row = next(line for line in report.splitlines()
                   if line.startswith('| GEM (dataset known) | 3 |'))
    assert gem_row.endswith(f'{100 * m.mean():.1f} ± {100 * half:.1f} |')
    assert 'Label-conflict pair (street, signs)' in report


def _holm_steps(p, alpha=0.05):
    """Holm written out: reject the sorted p_(i) while p_(i) <= alpha / (m - i + 1)."""
    reject = [False] * len(p)
    for i, idx in enumerate(sorted(range(len(p)), key=lambda k: p[k])):
        if p[idx] > alpha / (len(p) - i):
            break
        reject[idx] = True
    return reject


def test_paired_differences_mark_the_comparisons_surviving_holm(table, runs, tmp_path):
    names = list(runs.DATA_VERSIONS[2]['names'])
    rng = np.random.default_rng(3)
    gem = {s: rng.uniform(0.2, 0.5, len(names)) for s in range(3)}
    # GEM minus: dino a steady 5 points (p ~ 1e-4), moe 2 points with
    # noise (p = 0.043: outside its interval, not past Holm's 0.025), damex noise
    shift = {'dino': [0.05, 0.0501, 0.0499], 'moe': [0.02, 0.028, 0.013],
             'damex': [0.01, -0.02, 0.005]}
    store = CellStore(str(tmp_path / 'cells'))
    for s in range(3):
        store.save(f'gem_s{s}', _fake_cell(names, gem[s].tolist(), s))
        for m, d in shift.items():
            store.save(f'{m}_s{s}', _fake_cell(names, (gem[s] - d[s]).tolist(), s))
    args = table.parse_args(['--data-version', '2', '--iters', '7', '--render', '--methods',
                             'dino', 'moe', 'damex', 'gem', '--results-dir',
                             str(tmp_path / 'cells')])
    report = table.render(args)
    p = [stats.ttest_rel([gem[s].mean() for s in range(3)],
                         [gem[s].mean() - shift[m][s] for s in range(3)]).pvalue
         for m in ('dino', 'moe', 'damex')]
    survive = _holm_steps(p)
    assert survive == [True, False, False] and p[1] < 0.05  # the case the marks must tell
    for m, title, keep, raw in zip(('dino', 'moe', 'damex'), ('DINO (mixed)', 'DINO-MoE',
                                                              'DAMEX'), survive, p):
        row = next(line for line in report.splitlines()
                   if line.startswith(f'| GEM (dataset known) − {title} |'))
        mean_cell = row.split(' | ')[1]
        assert mean_cell.endswith(' †') == keep, (m, row)
        assert mean_cell.rstrip(' †').endswith(' *') == (raw < 0.05), (m, row)
    assert 'survives Holm' in report


def test_curve_path(tmp_path, mini_uodb_root):
    from tools.benchmark import mini_uodb_curve as curve
    args = ['--data-version', '1', '--scale', 'tiny', '--data-dir', str(mini_uodb_root),
            '--work-dir', str(tmp_path / 'work'), '--results-dir', str(tmp_path / 'cells'),
            '--method', 'dino', '--budgets', '2', '1', '--threads', '1', '--parallel', '1']
    assert curve.main(args) == 0
    assert CellStore(str(tmp_path / 'cells')).keys() == ['dino_s0_it1', 'dino_s0_it2']
    report = (tmp_path / 'cells.md').read_text()
    rows = [line for line in report.splitlines() if line.startswith('| 1 |')
            or line.startswith('| 2 |')]
    assert len(rows) == 2
    assert (tmp_path / 'cells.png').stat().st_size > 1000


def test_few_shot_adaptation_path(tmp_path, mini_uodb_root):
    from tools.benchmark import mini_uodb_few_shot as few
    args = ['--data-version', '1', '--scale', 'tiny', '--data-dir', str(mini_uodb_root),
            '--work-dir', str(tmp_path / 'work'), '--results-dir', str(tmp_path / 'cells'),
            '--iters', '1', '--adapt-iters', '1', '--methods', 'gem', '--shots', '5',
            '--scenarios', 'adapt', '--threads', '1', '--parallel', '1']
    assert few.main(args) == 0
    store = CellStore(str(tmp_path / 'cells'))
    base, adapt = store.load('base_gem_s0'), store.load('adapt_gem_5_s0')
    assert base['names'] == ['natural', 'aerial', 'icons', 'clipart', 'medical']
    assert adapt['names'] == base['names'] + ['signs']  # the new domain last
    assert adapt['lengths'][-1] == 5
    assert adapt['plan']['dataset_names'] == adapt['names']
    align = json.loads((tmp_path / 'work' / 'adapt_gem_5_s0' / 'expert_alignment.json')
                       .read_text())
    assert sorted(align['source_expert']) == [0, 1, 2, 3]
    report = (tmp_path / 'cells.md').read_text()
    assert '| GEM (dataset known) |' in report and 'Where the plan put the new domain' in report
    assert store.load('control_gem_s0') is None  # not asked for


def test_few_shot_control_fine_tunes_the_base_without_the_domain(tmp_path,
                                                                 mini_uodb_root):
    from tools.benchmark import mini_uodb_few_shot as few
    args = ['--data-version', '1', '--scale', 'tiny', '--data-dir', str(mini_uodb_root),
            '--work-dir', str(tmp_path / 'work'), '--results-dir', str(tmp_path / 'cells'),
            '--iters', '1', '--adapt-iters', '2', '--methods', 'dino', '--scenarios', 'control',
            '--threads', '1', '--parallel', '1']
    assert few.main(args) == 0
    store = CellStore(str(tmp_path / 'cells'))
    assert store.keys() == ['base_dino_s0', 'control_dino_s0']
    base, control = store.load('base_dino_s0'), store.load('control_dino_s0')
    assert control['train_names'] == base['names'] == ['natural', 'aerial', 'icons', 'clipart',
                                                       'medical']
    assert control['iters'] == 2
    assert control['meta'] == dict(scenario='control', method='dino', base='base_dino_s0')
    work = tmp_path / 'work' / 'control_dino_s0'
    cfg = Config.fromfile(str(work / 'dino-tiny_r18_mini-uodb.py'))
    assert cfg.load_from == str(work / 'start_from_base.pth')  # prepared from the base model
    report = (tmp_path / 'cells.md').read_text()
    row = next(line for line in report.split('**Interference**')[1].splitlines()
               if line.startswith('| DINO'))
    assert row.endswith('| – | – | – | – |')  # no adaptation cells to compare


def test_interference_is_adaptation_minus_control_paired_by_seed(runs, tmp_path):
    from tools.benchmark import mini_uodb_few_shot as few
    names = list(runs.DATA_VERSIONS[2]['names'])
    others = [n for n in names if n != 'street']
    rng = np.random.default_rng(2)
    base = {s: rng.uniform(0.1, 0.3, len(others)) for s in range(3)}
    control = {s: base[s] + rng.uniform(0.0, 0.1, len(others)) for s in range(3)}
    adapt = {s: control[s] - rng.uniform(-0.02, 0.05, len(others)) for s in range(3)}
    store = CellStore(str(tmp_path / 'cells'))
    for s in range(3):
        store.save(f'base_gem_s{s}', _fake_cell(others, base[s].tolist(), s))
        store.save(f'control_gem_s{s}', _fake_cell(others, control[s].tolist(), s))
        store.save(f'adapt_gem_10_s{s}', _fake_cell(others + ['street'],
                                                    adapt[s].tolist() + [0.05], s))
    args = few.parse_args(['--data-version', '2', '--iters', '7', '--render', '--methods', 'gem',
                           '--scenarios', 'adapt', 'control', '--shots', '10', '100', '--seeds',
                           '0', '1', '2', '--results-dir', str(tmp_path / 'cells')])
    report = few.render(args)

    def paired(a, b):
        d = np.array([a[s].mean() - b[s].mean() for s in range(3)])
        half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
        return f'{100 * d.mean():+.1f} ± {100 * half:.1f}'

    after = np.array([control[s].mean() for s in range(3)])
    half = stats.t.ppf(0.975, 2) * after.std(ddof=1) / np.sqrt(3)
    row = next(line for line in report.split('**Interference**')[1].splitlines()
               if line.startswith('| GEM'))
    assert row == (f'| GEM (dataset known) | {100 * after.mean():.1f} ± {100 * half:.1f} / '
                   f'{paired(control, base)} | {paired(adapt, control)} | – |')


def test_checkpoint_expansion_keeps_old_rows(runs):
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from tools.benchmark import mini_uodb_adapt as adapt
    init_default_scope('mmdet')
    cfg = runs.build_cfg(runs.method_config('gem', 1), '.', 1, 0, 'w')
    small = copy.deepcopy(cfg.model)  # building edits the config it gets
    small.update(num_datasets=5, label_offsets=[0, 4, 7, 10, 13, 17],
                 dataset_classes=cfg.model.dataset_classes[:5])
    small.bbox_head.num_classes = 17
    old = MODELS.build(small).state_dict()
    model = MODELS.build(copy.deepcopy(cfg.model))
    fresh = model.state_dict()
    state, expanded = adapt.expand_state_dict(old, fresh)
    assert any('cls_branches' in k for k in expanded)
    assert any('label_embedding' in k for k in expanded)
    assert any('domain_classifier' in k for k in expanded)
    for key, value in state.items():
        if 'routing_table.' in key or 'label_offsets' in key:
            assert torch.equal(value, fresh[key])
        elif key in expanded:
            n = old[key].shape[0]
            assert torch.equal(value[:n], old[key]) and torch.equal(value[n:], fresh[key][n:])
        else:
            assert torch.equal(value, old[key])
    with pytest.raises(ValueError, match='cannot grow'):
        adapt.expand_state_dict({**old, 'query_embedding.weight': torch.zeros(3, 3)}, fresh)


def test_expert_alignment_permutes_the_trained_experts():
    from tools.benchmark import mini_uodb_adapt as adapt
    old = np.array([[10, 0, 0, 0], [0, 8, 0, 0], [0, 0, 8, 4]])
    new = np.array([[0, 0, 10, 0], [8, 0, 0, 0], [0, 9, 0, 3], [0, 0, 0, 3]])  # + new domain
    assert adapt.expert_permutation(new[:3], old).tolist() == [1, 2, 0, 3]
    ffn = MoEFFN(8, 16, num_experts=4, num_datasets=4, routing='damex')
    before = {k: v.detach().clone() for k, v in ffn.named_parameters()}
    model = SimpleNamespace(moe_ffns=lambda: [ffn], installed_plan_quota=lambda: new)
    hook = adapt.AlignExpertsHook(dict(dataset_names=['a', 'b', 'c'], quota=old.tolist()))
    src = hook.align(model, ['a', 'b', 'c', 'new'])
    assert src.tolist() == [1, 2, 0, 3]
    for k, v in ffn.named_parameters():
        if v.shape[0] == 4:  # every expert-indexed tensor, the router's rows too
            assert torch.equal(v, before[k][src]), k
    assert any(k.startswith('router') for k in before)
    with pytest.raises(ValueError, match=r"old datasets \['c'\]"):
        hook.align(model, ['a', 'b', 'new'])


def test_ablation_variants_change_only_the_planner(runs, tmp_path, mini_uodb_root):
    from tools.benchmark import mini_uodb_ablation as ablation
    args = ablation.parse_args(['--data-version', '2', '--iters', '3', '--seeds', '0',
                                '--results-dir', str(tmp_path / 'cells')])
    jobs = ablation.make_jobs(args, 'data')
    assert len(jobs) == len(ablation.variants(2)) == 7
    hooks = {}
    for job in jobs:
        cfg = runs.build_cfg(job['train']['config'], '.', 3, 0, 'w',
                             planner=job['train']['planner'])
        (hook, ) = [h for h in cfg.custom_hooks if h.type == 'GEMPlannerHook']
        hooks[job['name'][:-3]] = hook
    assert hooks['base'].beta == 0.0 and hooks['base'].capacity_factor == 1.25
    assert hooks['beta1'].beta == 1.0 and hooks['capnone'].capacity_factor is None
    assert hooks['cap1.0'].capacity_factor == 1.0
    assert dict(hooks['simlabels'].similarity.sources) == dict(labels=1.0)
    assert dict(hooks['simfeatures'].similarity.sources) == dict(features=1.0)
    prior = hooks['simprior'].similarity.prior
    assert sorted(n for g in prior for n in g) == sorted(runs.DATA_VERSIONS[2]['names'])
    for name in ('beta1', 'capnone', 'simprior'):  # everything else as the base
        assert hooks[name].solver == hooks['base'].solver
        assert hooks[name].num_probe_images == hooks['base'].num_probe_images


def test_cells_of_the_same_setup_are_reused_across_benchmarks(table_run, tmp_path,
                                                               mini_uodb_root, monkeypatch):
    """The ablation's base variant and few-shot's mixed ``all`` cell are the
    table's GEM cell: copied from the table's folder, never trained again."""
    from tools.benchmark import mini_uodb_ablation as ablation
    from tools.benchmark import mini_uodb_few_shot as few
    results = tmp_path / 'results'
    common = ['--data-version', '1', '--scale', 'tiny', '--data-dir', str(mini_uodb_root),
              '--work-dir', str(tmp_path / 'work'), '--iters', '1', '--seeds', '0',
              '--threads', '1', '--parallel', '1']
    # the table's GEM cell (the module's table run), in a table folder beside these
    (results / 'table').mkdir(parents=True)
    shutil.copy(table_run.tmp / 'cells' / 'gem_s0.json', results / 'table' / 'gem_s0.json')
    before = json.loads((results / 'table' / 'gem_s0.json').read_text())

    def forbidden(*a, **k):
        raise AssertionError('a cell saved by another benchmark was trained again')

    monkeypatch.setattr(Runner, 'from_cfg', forbidden)
    assert ablation.main(common + ['--variants', 'base',
                                   '--results-dir', str(results / 'ablation')]) == 0
    report = (results / 'ablation.md').read_text()
    assert 'not trained again (same fingerprint): `base_s0` = `table/gem_s0.json`' in report
    assert '0 training run(s)' in report
    assert few.main(common + ['--methods', 'gem', '--shots', 'all', '--scenarios', 'mixed',
                              '--results-dir', str(results / 'few')]) == 0
    for folder, key, meta in (('ablation', 'base_s0', dict(variant='base')),
                              ('few', 'mixed_gem_all_s0',
                               dict(scenario='mixed', method='gem', shots='all'))):
        cell = json.loads((results / folder / f'{key}.json').read_text())
        assert cell['metrics'] == before['metrics'] and cell['plan'] == before['plan']
        assert cell['fingerprint'] == before['fingerprint']
        assert (cell['key'], cell['meta']) == (key, meta)
        assert cell['reused_from'] == os.path.join('table', 'gem_s0.json')
    # another setup (a planner variant) or --reuse without folders: trained (here: refused)
    assert ablation.main(common + ['--variants', 'beta1',
                                   '--results-dir', str(results / 'ablation')]) == 1
    assert ablation.main(common + ['--variants', 'base', '--reuse',
                                   '--results-dir', str(results / 'ablation2')]) == 1
    assert not (results / 'ablation2' / 'base_s0.json').exists()


class StartCapture:
    """What every training runner holds at ``before_train`` (after weights
    were initialised, upcycled or loaded, and after GEM planned), and what
    GEM's ``features`` similarity probed: the backbone it ran, its features
    and those of the same model initialised from scratch."""

    def __init__(self, runs, monkeypatch):
        from mmengine.hooks import Hook

        from mmgem.engine.planning import service
        self.starts, self.probes = {}, []
        capture = self

        class Snapshot(Hook):
            priority = 'LOWEST'

            def before_train(self, runner):
                job = os.path.basename(runner.work_dir)
                capture.starts[job] = {k: v.detach().clone()
                                       for k, v in runner.model.state_dict().items()}

        build, probe = runs.build_runner, service.probe_features

        def snapshot_runner(cfg):
            runner = build(cfg)
            runner.register_hook(Snapshot())
            return runner

        def spy(model, dataset, num_images):
            scratch = copy.deepcopy(model)
            scratch.upcycle_from = None
            torch.manual_seed(0)
            scratch.init_weights()
            self.probes.append(dict(
                backbone={k: v.detach().clone() for k, v in model.backbone.state_dict().items()},
                features=probe(model, dataset, num_images),
                scratch=probe(scratch, dataset, num_images)))
            return self.probes[-1]['features']

        monkeypatch.setattr(runs, 'build_runner', snapshot_runner)
        monkeypatch.setattr(service, 'probe_features', spy)


def test_upcycled_protocol_chains_the_dense_checkpoint(runs, tmp_path, mini_uodb_v2_root,
                                                       monkeypatch):
    from mmgem.engine.runner import load_checkpoint_file
    from tools.benchmark import mini_uodb_upcycled as upcycled
    small = runs.build_cfg

    def one_test_image(*a, **k):  # one test image per domain: the test is about the chain
        cfg = small(*a, **k)
        test = cfg.test_dataloader.dataset
        test.dataset_indices = {n: 1 for n in test.dataset_indices}
        return cfg

    monkeypatch.setattr(runs, 'build_cfg', one_test_image)
    args = ['--data-version', '2', '--scale', 'tiny', '--data-dir', str(mini_uodb_v2_root),
            '--work-dir', str(tmp_path / 'work'), '--results-dir', str(tmp_path / 'cells'),
            '--out', str(tmp_path / 'upcycled.md'), '--seeds', '0', '--threads', '1',
            '--parallel', '1', '--iters', '4', '--methods', 'dino', 'gem']
    calls, capture = Calls(monkeypatch), StartCapture(runs, monkeypatch)
    assert upcycled.main(args) == 0
    # stage 1 once, then the two rows (DAMEX and the routers upcycle as GEM does)
    assert (calls.train, calls.test) == (3, 3)
    assert sorted(capture.starts) == ['dino_s0', 'gem_s0', 'stage1_s0']
    ckpt = tmp_path / 'work' / 'stage1_s0' / 'iter_2.pth'  # kept for stage 2
    dense = load_checkpoint_file(str(ckpt), map_location='cpu')['state_dict']
    # the control continues from the dense checkpoint: every weight as saved
    start = capture.starts['dino_s0']
    assert set(start) == set(dense)
    for key, value in dense.items():
        assert torch.equal(start[key], value), key
    assert not torch.equal(capture.starts['stage1_s0']['backbone.conv1.weight'],
                           dense['backbone.conv1.weight'])  # stage 1 did train
    # GEM planned on the loaded (trained dense) backbone, not a fresh one
    assert capture.probes
    for probe in capture.probes:
        assert probe['backbone'].keys() == {k[len('backbone.'):] for k in dense
                                             if k.startswith('backbone.')}
        for key, value in probe['backbone'].items():
            assert torch.equal(value, dense['backbone.' + key]), key
        assert not all(np.allclose(probe['features'][n], probe['scratch'][n])
                       for n in probe['features'])
    # the MoE row is upcycled: every expert is the dense FFN, the rest the dense model
    for row in ('gem_s0',):
        start = capture.starts[row]
        for layer in (0, 2):
            ffn = f'decoder.layers.{layer}.ffn.'
            for name, dense_key in (('w1', 'layers.0.0.weight'), ('b1', 'layers.0.0.bias'),
                                    ('w2', 'layers.1.weight'), ('b2', 'layers.1.bias')):
                experts = start[ffn + name]
                assert experts.shape[0] == 4
                for e in range(4):
                    assert torch.equal(experts[e], dense[ffn + dense_key]), (row, layer, name)
        for key in ('backbone.conv1.weight', 'backbone.layer4.1.bn2.running_mean',
                    'encoder.layers.0.ffn.layers.0.0.weight', 'bbox_head.cls_branches.0.weight'):
            assert torch.equal(start[key], dense[key]), (row, key)
    store = CellStore(str(tmp_path / 'cells'))
    assert store.keys() == ['dino_s0', 'gem_s0', 'stage1_s0']
    assert {store.load(k)['iters'] for k in store.keys()} == {2}
    report = (tmp_path / 'upcycled.md').read_text()
    assert '| DINO (dense, stage 1: 2 it) | 1 |' in report
    assert 'GEM (dataset known) [upcycled] − DINO (mixed) [dense, continued]' in report
    # a rerun reuses every saved cell: nothing is built
    _assert_rerun_builds_nothing(upcycled.main, args, tmp_path / 'cells', store.keys(),
                                 monkeypatch)


def _upcycled_jobs(upcycled, tmp_path, iters, stage1_iters):
    args = upcycled.parse_args([
        '--data-version', '2', '--scale', 'tiny', '--data-dir', str(tmp_path / 'data'),
        '--work-dir', str(tmp_path / 'work'), '--results-dir', str(tmp_path / 'cells'),
        '--seeds', '0', '--iters', str(iters), '--stage1-iters', str(stage1_iters),
        '--methods', 'dino', 'damex', 'gem', 'gem_unknown'])
    first = upcycled.stage1_job(args, 'data-fp', 0)
    return first, upcycled.stage2_jobs(args, 'data-fp', first)


def test_upcycled_fingerprints_include_stage_one(runs, tmp_path):
    from tools.benchmark import mini_uodb_upcycled as upcycled
    first, jobs = _upcycled_jobs(upcycled, tmp_path, 4, 2)
    modes = {e['key']: j['start_from']['mode'] for j in jobs for e in j['evals']}
    assert modes == {'dino_s0': 'load', 'damex_s0': 'upcycle', 'gem_s0': 'upcycle',
                     'gem_unknown_s0': 'upcycle'}  # GEM's protocols share one training
    assert len(jobs) == 3
    for job in jobs:
        assert job['start_from']['checkpoint'] == str(tmp_path / 'work' / 'stage1_s0' /
                                                      'iter_2.pth')
        assert job['start_from']['fingerprint'] == first['train_fingerprint']
        assert job['train']['iters'] == 2
    # another stage 1 (3 iterations), the same stage 2 (2 iterations): new fingerprints
    other_first, other = _upcycled_jobs(upcycled, tmp_path, 5, 3)
    fps = {e['key']: e['fingerprint'] for j in jobs for e in j['evals']}
    assert other_first['train_fingerprint'] != first['train_fingerprint']
    for job in other:
        assert job['train']['iters'] == 2
        for e in job['evals']:
            assert e['fingerprint'] != fps[e['key']]
    again = {e['key']: e['fingerprint'] for j in _upcycled_jobs(upcycled, tmp_path, 4, 2)[1]
             for e in j['evals']}
    assert again == fps  # stable


def test_stage_one_trains_again_when_a_later_job_needs_its_lost_checkpoint(runs, tmp_path):
    from tools.benchmark import mini_uodb_upcycled as upcycled
    first, jobs = _upcycled_jobs(upcycled, tmp_path, 4, 2)
    store = CellStore(str(tmp_path / 'cells'))

    def stages():
        return list(upcycled.make_stages(upcycled.parse_args([
            '--data-version', '2', '--scale', 'tiny', '--data-dir', str(tmp_path / 'data'),
            '--work-dir', str(tmp_path / 'work'), '--results-dir', str(tmp_path / 'cells'),
            '--seeds', '0', '--iters', '4', '--methods', 'dino', 'damex', 'gem',
            'gem_unknown']), 'data-fp'))

    for job in [first] + jobs:  # every cell saved
        for e in job['evals']:
            store.save(e['key'], dict(fingerprint=e['fingerprint']))
    (stage1,), stage2 = stages()
    assert not stage1['checkpoint_needed'] and not any(map(runs.needs_run, [stage1] + stage2))
    os.remove(store.path('damex_s0'))  # a lost stage-2 cell, no stage-1 checkpoint
    (stage1,), stage2 = stages()
    assert stage1['checkpoint_needed'] and runs.needs_run(stage1)
    assert [j['name'] for j in stage2 if runs.needs_run(j)] == ['damex_s0']
    os.makedirs(stage1['work_dir'])  # its checkpoint is there: stage 1 is not run again
    open(runs.job_checkpoint(stage1), 'wb').close()
    with open(os.path.join(stage1['work_dir'], 'train_done.json'), 'w') as f:
        json.dump(dict(train_fingerprint=stage1['train_fingerprint']), f)
    assert runs.trained(stage1) is not None and not runs.needs_run(stage1)
    with open(os.path.join(stage1['work_dir'], 'train_done.json'), 'w') as f:
        json.dump(dict(train_fingerprint='another stage 1'), f)
    assert runs.needs_run(stage1)


def test_upcycled_report_rows_and_same_protocol_differences(runs, tmp_path):
    from tools.benchmark import mini_uodb_upcycled as upcycled
    names = list(runs.DATA_VERSIONS[2]['names'])
    rng = np.random.default_rng(5)
    methods = ['dino', 'damex', 'gem', 'dino_unknown', 'damex_unknown', 'gem_unknown']
    aps = {m: {s: rng.uniform(0.05, 0.5, len(names)) for s in range(3)}
           for m in methods + ['stage1']}
    store = CellStore(str(tmp_path / 'cells'))
    # GEM's cells route each dataset to its own expert (NMI 1); every cell has a
    # domain accuracy, the stage-1 row's included (its title is not a method's)
    one_to_one = 10 * np.eye(len(names))  # dataset x expert tokens
    for m, by_seed in aps.items():
        for s, values in by_seed.items():
            cell = _fake_cell(names, values.tolist(), s)
            cell['metrics'].update({'uodb/domain_acc': 50.0 + s,
                                    **{f'uodb/{n}_domain_acc': 40.0 + s for n in names}})
            if m.startswith('gem'):
                cell['layer_counts'] = [one_to_one.tolist()] * 2
            store.save(f'{m}_s{s}', cell)
    args = upcycled.parse_args(['--data-version', '2', '--iters', '8', '--render',
                                '--results-dir', str(tmp_path / 'cells')])
    assert args.methods == methods and args.stage1_iters == 4
    assert args.results_dir.endswith('cells')
    assert upcycled.parse_args(['--render']).results_dir.endswith(
        'tools/benchmark/results/mini_uodb_upcycled_v2_1000it')
    report = upcycled.render(args)
    lines = report.splitlines()
    compared = [line.split(' | ')[0][2:] for line in lines if ' − ' in line]
    assert compared == [
        'GEM (dataset known) [upcycled] − DINO (mixed) [dense, continued]',
        'GEM (dataset known) [upcycled] − DAMEX [upcycled]',
        'GEM (dataset unknown) [upcycled] − DINO (mixed, dataset unknown) [dense, continued]',
        'GEM (dataset unknown) [upcycled] − DAMEX (dataset unknown) [upcycled]']
    # the group table: rarest two of the stage-1 row, mean over seeds ± t half-width
    rare = [names.index(n) for n in ('clipart', 'watercolor')]
    v = np.array([aps['stage1'][s][rare].mean() for s in range(3)])
    half = stats.t.ppf(0.975, 2) * v.std(ddof=1) / np.sqrt(3)
    row = next(line for line in lines if line.startswith('| DINO (dense, stage 1: 4 it) | 3 |'))
    assert row.split(' | ')[3] == f'{100 * v.mean():.1f} ± {100 * half:.1f}'
    assert 'survives Holm' in report
    assert report.count('| Method | seeds | ' + ' | '.join(names) + ' | Mean |') == 2  # AP, AP50
    # the table's specialisation and domain-classifier columns, per row
    assert '| GEM (dataset known) [upcycled] | 3 | 1.00 | 1.00 | 1.00 |' in report
    assert '| DINO (dense, stage 1: 4 it) | 3 | 51.0 | 41.0 |' in report
