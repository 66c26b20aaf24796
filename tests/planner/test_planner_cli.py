# Copyright (c) mmgem contributors. All rights reserved.
"""tools/analysis_tools/gem_plan.py and the UODB statistics file."""
import json
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config

from mmgem.planner import GEMPlan, PlanError, load_dataset_stats
from mmgem.planner.stats import parse_dataset_stats

REPO = Path(__file__).resolve().parents[2]
UODB_STATS = REPO / 'configs' / '_base_' / 'datasets' / 'uodb_stats.json'
DAMEX = [['clipart'], ['coco', 'voc', 'comic'], ['deeplesion'], ['dota'], ['kitchen'],
         ['kitti', 'lisa'], ['watercolor'], ['widerface']]
# class counts of spec section 6
SPEC_NUM_CLASSES = dict(voc=20, widerface=1, kitti=3, lisa=4, dota=15, coco=80, watercolor=6,
                        clipart=20, comic=6, kitchen=11, deeplesion=1)


@pytest.fixture
def gem_plan():
    from tools.analysis_tools import gem_plan

    return gem_plan


def test_uodb_stats_file_matches_the_uodb_config():
    stats = load_dataset_stats(str(UODB_STATS))
    cfg = Config.fromfile(str(REPO / 'configs' / '_base_' / 'datasets' / 'uodb.py'))
    assert stats.names == list(cfg.uodb_dataset_names)
    for name in stats.names:
        assert stats.labels[name] == list(cfg.uodb_classes[name])
        assert len(stats.labels[name]) == SPEC_NUM_CLASSES[name]
    raw = json.loads(UODB_STATS.read_text())
    for entry in raw['datasets']:
        assert entry['split'] == cfg.uodb_splits[entry['name']][0]
        assert isinstance(entry['exact'], bool) and entry['note']
        assert isinstance(entry['num_images'], int) and entry['num_images'] > 0
    exact = {e['name']: e['num_images'] for e in raw['datasets'] if e['exact']}
    assert exact['voc'] == 5011 + 11540 and exact['coco'] == 40504 - 5000


def test_stats_parsing_errors(tmp_path):
    with pytest.raises(PlanError, match=r"dataset 'a' has neither \"num_images\" nor \"load\""):
        parse_dataset_stats(dict(datasets=[dict(name='a')]))
    with pytest.raises(PlanError, match="dataset 'a' is listed twice"):
        parse_dataset_stats(dict(datasets=[dict(name='a', load=1), dict(name='a', load=2)]))
    with pytest.raises(PlanError, match='"datasets" list'):
        parse_dataset_stats(dict(sets=[]))
    path = tmp_path / 'stats.yaml'
    path.write_text('datasets:\n  - {name: a, num_images: 10, load: 7.5}\n'
                    '  - {name: b, num_images: 3}\nprior: [[a, b]]\n')
    stats = load_dataset_stats(str(path))
    assert stats.names == ['a', 'b'] and stats.loads == [7.5, 3.0]
    assert stats.prior == [['a', 'b']]


def test_cli_damex_prior_reproduces_damex(gem_plan, tmp_path, capsys):
    out = tmp_path / 'damex'
    code = gem_plan.main(['--stats', str(UODB_STATS), '--experts', '8', '--similarity',
                          'prior', '--capacity-factor', 'none', '--out-dir', str(out)])
    assert code == 0
    plan = GEMPlan.load(str(out / 'gem_plan.json'))
    groups = {frozenset(plan.dataset_names[d] for d in np.flatnonzero(plan.quota[:, e]))
              for e in range(8)}
    assert groups == {frozenset(g) for g in DAMEX}
    assert (out / 'gem_plan.png').read_bytes()[:4] == b'\x89PNG'
    text = capsys.readouterr().out
    assert 'similarity: prior' in text and plan.hash[:12] in text


def test_cli_default_plan_respects_capacity(gem_plan, tmp_path, capsys):
    code = gem_plan.main(['--stats', str(UODB_STATS), '--experts', '8', '--no-plot',
                          '--weights', 'prior=1,labels=1', '--out-dir', str(tmp_path)])
    assert code == 0
    plan = GEMPlan.load(str(tmp_path / 'gem_plan.json'))
    assert plan.capacity_factor == 1.25 and plan.expert_loads.max() <= plan.capacity
    assert not (tmp_path / 'gem_plan.png').exists()
    assert 'similarity: prior, labels' in capsys.readouterr().out
    code = gem_plan.main(['--stats', str(UODB_STATS), '--experts', '8', '--capacity-factor',
                          '0.5', '--out-dir', str(tmp_path)])
    assert code == 2
    assert 'capacity_factor=0.5 < 1' in capsys.readouterr().err


def test_cli_reads_a_training_config(gem_plan, tmp_path, capsys):
    """--config builds the training dataset (select, dataset_indices) and the hook."""
    counts = dict(alpha=7, beta=3, gamma=12, delta=5)
    for name, n in counts.items():
        ann = tmp_path / 'data' / name / 'annotations'
        ann.mkdir(parents=True)
        coco = dict(images=[dict(id=100 + i, file_name=f'{i}.jpg', width=8, height=8)
                            for i in range(n)],
                    annotations=[], categories=[dict(id=1, name=f'{name}_thing')])
        (ann / 'train.json').write_text(json.dumps(coco))
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(
        f'names = {list(counts)!r}\n'
        'model = dict(type="GEMDINO", num_experts=2)\n'
        'train_dataloader = dict(batch_size=1, num_workers=0,\n'
        '    sampler=dict(type="DefaultSampler", shuffle=False),\n'
        '    dataset=dict(type="UODBDataset", data_root="/nowhere",\n'
        '    dataset_names=names, select=["gamma", "alpha", "beta"],\n'
        '    dataset_indices=dict(gamma=4), filter_cfg=dict(filter_empty_gt=False),\n'
        '    datasets=[dict(type="CocoDataset", ann_file=f"{n}/annotations/train.json",\n'
        '                   data_prefix=dict(img=f"{n}/"),\n'
        '                   metainfo=dict(classes=(f"{n}_thing",))) for n in names]))\n'
        'custom_hooks = [dict(type="GEMPlannerHook", capacity_factor=None, beta=0.5,\n'
        '                     similarity=dict(sources=dict(labels=1.0)))]\n')
    code = gem_plan.main(['--config', str(cfg), '--data-root', str(tmp_path / 'data'),
                          '--no-plot', '--out-dir', str(tmp_path / 'out')])
    assert code == 0
    plan = GEMPlan.load(str(tmp_path / 'out' / 'gem_plan.json'))
    assert plan.dataset_names == ('gamma', 'alpha', 'beta')  # select, in its order
    assert plan.images.tolist() == [4, 7, 3]  # dataset_indices cut gamma to 4
    assert plan.num_experts == 2 and plan.capacity_factor is None and plan.beta == 0.5
    assert plan.similarity_spec == dict(sources=dict(labels=1.0), prior=None)
    assert all(d is not None for d in plan.id_digests)  # cut at the training images
    ids = dict(gamma=[100, 101, 102, 103], alpha=list(range(100, 107)),
               beta=[100, 101, 102])
    np.testing.assert_array_equal(plan.realised_counts(ids), plan.quota)
    # an override is allowed and said to differ from the training plan
    code = gem_plan.main(['--config', str(cfg), '--data-root', str(tmp_path / 'data'),
                          '--beta', '0', '--no-plot', '--out-dir', str(tmp_path / 'out2')])
    assert code == 0 and "override the config's GEMPlannerHook" in capsys.readouterr().out
    assert GEMPlan.load(str(tmp_path / 'out2' / 'gem_plan.json')).beta == 0.0
    # a config without the hook is an error naming it
    cfg.write_text(cfg.read_text().split('custom_hooks')[0])
    with pytest.raises(SystemExit, match='has no GEMPlannerHook'):
        gem_plan.main(['--config', str(cfg), '--data-root', str(tmp_path / 'data')])


def test_scaling_benchmark_runs_and_writes_markdown(tmp_path):
    from tools.benchmark import planner_scaling as bench
    rows, worst = bench.run([(6, 3)], ['ECOS'], repeats=1, seeds=[0], capacity_factor=1.25,
                            time_limit=60.0)
    assert len(rows) == 1 and rows[0]['ratio'] >= 1 - 1e-6
    assert rows[0]['milp_ratio'] >= 1 - 1e-6  # the best integral plan is above the LP
    # the rounded plan is a feasible point of the MILP: never below its optimum
    assert rows[0]['ratio'] >= rows[0]['milp_ratio'] - 1e-6

    class Args:
        capacity_factor, seeds, load = 1.25, [0], 0.0
    text = bench.to_markdown(rows, worst, Args)
    assert '| 6 x 3 | ECOS |' in text and 'Worst case: K=6, M=3' in text


def test_quality_benchmark_measures_against_the_milp():
    from tools.benchmark import planner_instances as pi
    from tools.benchmark import planner_quality as bench
    rows = [bench.run_instance(pi.random_instance(f, 1)) for f in ('uniform', 'labels')]
    for r in rows:
        assert r['milp_status'] == 'optimal'
        assert r['exact_cost'] == pytest.approx(r['milp'], rel=1e-7, abs=1e-12)
        assert r['heuristic_cost'] >= r['milp'] - 1e-9 and r['heuristic_above_bound']
    text = '\n'.join(bench.quality_tables(rows) + bench.time_table(rows, []))
    assert '| uniform | 1 |' in text and '| labels | 1 |' in text and '| all | 2 |' in text
    assert '| random 3-12 x 1-10 | 2 |' in text
