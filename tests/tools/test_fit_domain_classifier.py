# Copyright (c) mmgem contributors. All rights reserved.
"""tools/analysis_tools/fit_domain_classifier.py refits only the domain classifier."""
import torch
from tool_utils import tiny_gem_config

from mmgem.engine.runner import load_checkpoint_file
from mmgem.models.layers import DomainClassifier
from tools.analysis_tools import fit_domain_classifier as fit

PREFIX = 'domain_classifier.'


def _bytes(t):
    return t.dtype, tuple(t.shape), t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def test_refit_changes_the_classifier_and_nothing_else(mini_uodb_root, tiny_gem_checkpoint,
                                                       tmp_path):
    config = tmp_path / 'gem.py'
    tiny_gem_config(mini_uodb_root).dump(str(config))
    out = tmp_path / 'refit.pth'
    text = fit.main([str(config), str(tiny_gem_checkpoint), '--out', str(out), '--iters', '30',
                     '--max-images', '3', '--loss-balance', 'balanced_softmax'])
    old, new = (load_checkpoint_file(str(p)) for p in (tiny_gem_checkpoint, out))
    assert set(old['state_dict']) == set(new['state_dict'])
    classifier = [k for k in old['state_dict'] if k.startswith(PREFIX)]
    assert classifier and len(classifier) < len(old['state_dict'])
    for key, value in old['state_dict'].items():
        if key.startswith(PREFIX):
            assert value.shape == new['state_dict'][key].shape
        else:
            assert _bytes(value) == _bytes(new['state_dict'][key]), key
    assert all(not torch.equal(old['state_dict'][k], new['state_dict'][k]) for k in classifier)
    assert new['meta']['dataset_meta'] == old['meta']['dataset_meta']
    record = new['meta']['domain_classifier_fit']
    assert record['loss_balance'] == 'balanced_softmax' and record['iters'] == 30
    assert record['train_images'] == [3] * 6
    assert text.count('\n| ') == 6 + 2  # one row per domain, balanced accuracy
    assert '| balanced accuracy |' in text and 'checkpoint recall %' in text
    assert not list(tmp_path.glob('.*refit*'))  # no temp file left


def test_balanced_fit_predicts_every_domain_of_a_separable_toy_set(toy_domains):
    # domain d: N(1.5 e_d, 0.3^2 I): separable, with a 1000 : 60 : 6 prior
    feats, labels = toy_domains([1000, 60, 6], 0, 1.5)
    test_feats, test_labels = toy_domains([100, 100, 100], 1, 1.5)
    recalls = {}
    for balance in ('none', 'balanced_softmax'):
        classifier = DomainClassifier(3, embed_dims=8, num_layers=1)
        fit.fit_classifier(classifier, feats, labels, balance, iters=300, fit_batch=32, lr=1e-2)
        recalls[balance] = fit.domain_recalls(classifier, test_feats, test_labels)
    assert min(recalls['balanced_softmax']) >= 0.9, recalls
    assert recalls['none'][2] < 0.7, recalls  # the plain fit misses the rare domain
    assert classifier.class_counts.tolist() == [1000, 60, 6]
