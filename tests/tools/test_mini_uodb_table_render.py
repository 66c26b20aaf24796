# Copyright (c) mmgem contributors. All rights reserved.
"""The v2 table's new sections, rendered from hand-made cells: the
specialisation measure (NMI per layer, against the entropy identity
I = H(D) + H(E) - H(D, E) computed with scipy), GEM's 2 x 2 table, the
dataset-unknown comparisons, the zero-AP domain check and the expert
utilisation (the per-layer counts summed, or an old cell's own)."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from mmgem.models.layers import BatchRouting, MoEFFN
from mmgem.registry import ROUTERS
from tools.benchmark import mini_uodb_runs as runs
from tools.benchmark import mini_uodb_table as table
from tools.benchmark.cell_store import CellStore

NAMES = list(runs.DATA_VERSIONS[2]['names'])


def _cell(aps, seed=0, **extra):
    metrics = {f'uodb/{n}_bbox_mAP': v for n, v in zip(NAMES, aps)}
    metrics.update({f'uodb/{n}_bbox_mAP_50': v for n, v in zip(NAMES, aps)})
    cell = dict(fingerprint='f', names=NAMES, display=NAMES, seed=seed, iters=7,
                train_fingerprint=f't{seed}{aps[0]}', train_s=60.0, test_s=6.0, iter_s=1.0,
                iter_median_s=0.8, lengths=[10] * len(NAMES), train_names=NAMES,
                metrics=metrics, utilisation=None, plan=None,
                machine=dict(machine='x86_64', cpus=2, threads=1, torch='t'))
    cell.update(extra)
    return cell


def _nmi_by_entropies(counts):
    joint = np.asarray(counts, np.float64)
    joint = joint / joint.sum()
    h_d, h_e = entropy(joint.sum(1)), entropy(joint.sum(0))
    mutual = h_d + h_e - entropy(joint.ravel())
    return 2 * mutual / (h_d + h_e)


def _render(tmp_path, cells):
    store = CellStore(str(tmp_path / 'cells'))
    for key, cell in cells.items():
        store.save(key, cell)
    methods = [k.rsplit('_s', 1)[0] for k in cells]
    args = table.parse_args(['--data-version', '2', '--iters', '7', '--render', '--seeds', '0',
                             '--methods', *methods, '--results-dir', str(tmp_path / 'cells')])
    return table.render(args)


def test_specialisation_column_is_the_nmi_of_each_layer(tmp_path):
    rng = np.random.default_rng(0)
    layers = [rng.integers(0, 50, size=(len(NAMES), 4)).tolist(),
              np.eye(len(NAMES), 4, dtype=int).dot(7).tolist()]
    layers[1][5][1] = 3  # not a perfect map: NMI strictly between 0 and 1
    report = _render(tmp_path, {'soft_moe_s0': _cell([0.1] * len(NAMES), layer_counts=layers),
                                'dino_s0': _cell([0.1] * len(NAMES))})
    want = [_nmi_by_entropies(c) for c in layers]
    assert 0 < want[0] < 0.2 and 0.5 < want[1] < 1
    row = next(line for line in report.splitlines() if line.startswith('| Soft MoE | 1 | 0'))
    got = [float(v) for v in row.strip('| ').split(' | ')[2:4]]
    assert got == pytest.approx(want, abs=0.005)
    assert '| Method | seeds | NMI layer 1 | NMI layer 2 | top-expert share |' in report
    share = np.mean([(np.max(c, 1) / np.maximum(np.sum(c, 1), 1)).mean() for c in layers])
    assert float(row.strip('| ').split(' | ')[4]) == pytest.approx(share, abs=0.005)


def test_two_by_two_comparisons_and_zero_domains(tmp_path):
    k = len(NAMES)
    aps = {'gem': [0.2] * k, 'gem_true_routing_names': [0.18] * k,
           'gem_predicted_labels': [0.1] * k, 'gem_unknown': [0.15] * (k - 1) + [0.0],
           'dino': [0.12] * k, 'damex': [0.11] * (k - 1) + [0.01],
            'damex_unknown': [0.05] * (k - 1) + [0.0]}
    report = _render(tmp_path, {f'{m}_s0': _cell(v) for m, v in aps.items()})
    lines = report.splitlines()
    assert '| true dataset | 20.0 | 18.0 |' in lines
    assert f'| predicted dataset | 10.0 | {100 * np.mean(aps["gem_unknown"]):.1f} |' in lines
    pairs = [line.split(' | ')[0][2:] for line in lines if ' − ' in line]
    assert pairs == ['GEM (dataset known) − DINO (mixed)', 'GEM (dataset known) − DAMEX',
                     'GEM (dataset unknown) − DAMEX (dataset unknown)',
                     'GEM (dataset unknown) − GEM (dataset known)',
                     'GEM (dataset unknown) − DINO (mixed)']
    diff = next(line for line in lines if line.startswith('| GEM (dataset unknown) − DINO'))
    assert diff.split(' | ')[1].startswith(f'{100 * (np.mean(aps["gem_unknown"]) - 0.12):+.1f}')
    assert '- GEM (dataset unknown): clipart' in lines  # 0 AP, 20 AP when known
    assert '- DAMEX (dataset unknown): none' in lines  # its 0 is 1 AP when known


def test_refit_row_sits_with_gem_dataset_unknown_rows(tmp_path):
    k = len(NAMES)

    def accuracy(per_domain):
        metrics = {f'uodb/{n}_domain_acc': v for n, v in zip(NAMES, per_domain)}
        metrics.update({'uodb/domain_acc': float(np.mean(per_domain))})
        return metrics

    plain, refitted = [90.0] * (k - 2) + [0.0, 0.0], [70.0] * k
    refit = dict(spec=runs.refit_spec({}), names=NAMES, fit_images=[10] * k,
                 recall=[0.8] * k, balanced_accuracy=0.8, checkpoint_recall=[0.4] * k,
                 checkpoint_balanced_accuracy=0.4, extract_s=50.0, fit_s=3.0, total_s=55.0,
                 cpu_s=50.0)
    cells = {'gem_s0': _cell([0.2] * k), 'dino_unknown_s0': _cell([0.1] * k),
             'gem_refit_unknown_s0': _cell([0.16] * k, refit=refit),
             'gem_unknown_s0': _cell([0.15] * k)}
    cells['gem_unknown_s0']['metrics'].update(accuracy(plain))
    cells['gem_refit_unknown_s0']['metrics'].update(accuracy(refitted))
    lines = _render(tmp_path, cells).splitlines()
    rows = [line.split(' | ')[0][2:] for line in lines if line.startswith('| ')
            and line.split(' | ')[1] == '1' and 'AP' not in line][:4]
    assert rows == ['GEM (dataset known)', 'DINO (mixed, dataset unknown)',
                    'GEM (dataset unknown)', 'GEM (dataset unknown, classifier refit)']
    acc = next(line for line in lines if line.startswith('| GEM (dataset unknown, classifier'
                                                         ' refit) | 1 | 70.0 |'))
    assert acc.split(' | ')[3] == '70.0'  # balanced: the mean of the per-domain accuracies
    assert any(line.startswith('| GEM (dataset unknown) | 1 | ') and
               line.split(' | ')[3] == f'{np.mean(plain):.1f}' for line in lines)
    refit_line = next(line for line in lines if line.startswith('- GEM (dataset unknown, '
                                                                'classifier refit): '))
    assert '`balanced_softmax`, 1000 steps' in refit_line
    assert '40.0 trained -> 80.0 refitted' in refit_line and '55 s per refit' in refit_line
    assert any(line.startswith('| GEM (dataset unknown, classifier refit) − GEM (dataset '
                               'unknown) | +1.0') for line in lines)
    assert 'GEM (dataset unknown, classifier refit) 1.0 min training (1.00 s/iter) + 55 s ' \
           'classifier refit + 6 s test' in '\n'.join(lines)


def _section(report, title):
    """The lines of the report's paragraph that starts with ``title``."""
    lines = report.splitlines() + ['']
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    return lines[start:lines.index('', start + 2)]


def test_utilisation_from_layer_counts_or_an_old_cells_own(tmp_path):
    layers = np.random.default_rng(1).integers(0, 50, size=(3, len(NAMES), 4))
    aps = [0.1] * len(NAMES)
    title = '**Expert utilisation, Soft MoE**'
    new = _section(_render(tmp_path / 'new', {
        'soft_moe_s0': _cell(aps, layer_counts=layers.tolist())}), title)
    old = _section(_render(tmp_path / 'old', {
        'soft_moe_s0': _cell(aps, utilisation=layers.sum(0).tolist())}), title)
    assert new == old and len(new) == 4 + len(NAMES)
    tokens = layers.sum(0)
    share = tokens / tokens.sum(1, keepdims=True)
    assert new[4] == f'| {NAMES[0]} | ' + ' | '.join(f'{v:.2f}' for v in share[0]) + ' |'


def test_utilisation_hook_layers_add_up_to_the_routers_per_image_counts():
    # every router's MoE layer, on the same batch of three images of two datasets
    ids, layers = [0, 1, 0], []
    for i, router in enumerate(sorted(ROUTERS.module_dict)):
        torch.manual_seed(i)
        layer = MoEFFN(16, 32, num_experts=4, router=dict(type=router), num_datasets=2).eval()
        with torch.no_grad():
            layer(torch.randn(3, 5, 16), routing=BatchRouting(
                image_experts=torch.tensor([2, 0, 2]), dataset_ids=torch.tensor(ids)))
        layers.append(layer)
    runner = SimpleNamespace(model=SimpleNamespace(moe_ffns=lambda: layers))
    batch = dict(data_samples=[SimpleNamespace(metainfo=dict(dataset_id=d)) for d in ids])
    hook = runs.ExpertUtilisation(2, 4)
    for it in range(2):
        hook.after_test_iter(runner, it, batch)
    # what the cells stored as `utilisation`: every layer's image_experts, per dataset
    want = np.zeros((2, 4), np.int64)
    for layer in layers:
        for d, row in zip(ids, layer.routing_stats['image_experts'].numpy()):
            want[d] += 2 * row
    assert hook.layers.shape == (len(layers), 2, 4) and want.sum() > 0
    np.testing.assert_array_equal(hook.layers.sum(0), want)
    np.testing.assert_array_equal(
        table.expert_utilisation(dict(layer_counts=hook.layers.tolist())), want)
