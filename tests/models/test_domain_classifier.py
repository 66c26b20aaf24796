# Copyright (c) mmgem contributors. All rights reserved.
"""The domain classifier pools over valid tokens only."""
import pytest
import torch

from mmgem.models.layers import DomainClassifier


def test_pool_ignores_padded_tokens():
    torch.manual_seed(0)
    memory = torch.randn(2, 5, 8)
    mask = torch.tensor([[False, False, True, True, True],
                         [False, False, False, False, False]])
    pooled = DomainClassifier.pool(memory, mask)
    torch.testing.assert_close(pooled[0], memory[0, :2].mean(0))
    torch.testing.assert_close(pooled[1], memory[1].mean(0))
    # padded values do not matter
    changed = memory.clone()
    changed[0, 2:] = 1e6
    torch.testing.assert_close(DomainClassifier.pool(changed, mask), pooled)


def test_logits_loss_and_detach():
    torch.manual_seed(0)
    clf = DomainClassifier(num_datasets=3, embed_dims=8, hidden_dims=64)
    memory = torch.randn(2, 5, 8, requires_grad=True)
    logits = clf(memory)
    assert logits.shape == (2, 3)
    target = torch.tensor([2, 0])
    expected = -torch.log_softmax(logits, 1)[torch.arange(2), target].mean()
    torch.testing.assert_close(clf.loss(logits, target), expected)
    clf.loss(logits, target).backward()
    assert float(memory.grad.abs().sum()) > 0
    detached = DomainClassifier(3, 8, 4, detach_input=True)
    memory.grad = None
    detached.loss(detached(memory), target).backward()
    assert memory.grad is None
    with pytest.raises(ValueError, match='num_layers must be >= 1'):
        DomainClassifier(3, 8, num_layers=0)


# ----------------------------------------------------------------------
# class-balanced losses: the rare domains are seen
# ----------------------------------------------------------------------
TOY_COUNTS = [1000, 60, 6]


def _toy(toy_domains, counts, seed):
    """Domain d: N(2 e_d, 0.3^2 I) in 8 dimensions, one token each."""
    x, y = toy_domains(counts, seed, 2.0)
    return x[:, None, :], y


def _recalls(toy_domains, **kwargs):
    """Train a linear classifier 200 SGD steps of 16 images sampled in
    proportion to the imbalanced toy set; recall of each domain on a
    balanced test set."""
    torch.manual_seed(0)
    clf = DomainClassifier(3, embed_dims=8, num_layers=1, **kwargs)
    x, y = _toy(toy_domains, TOY_COUNTS, 0)
    opt = torch.optim.SGD(clf.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        idx = torch.randint(0, len(y), (16, ), generator=gen)
        loss = clf.loss(clf(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    clf.eval()
    x_test, y_test = _toy(toy_domains, [100, 100, 100], 2)
    with torch.no_grad():
        pred = clf(x_test).argmax(1)
    return clf, [float((pred[y_test == d] == d).float().mean()) for d in range(3)]


def test_balanced_classifier_sees_the_rare_domains(toy_domains):
    _, plain = _recalls(toy_domains)
    assert plain[2] < 0.5  # the rarest domain is (mostly) not predicted
    clf, inverse = _recalls(toy_domains, loss_balance='inverse_frequency')
    _, softmax = _recalls(toy_domains, loss_balance='balanced_softmax', class_counts=TOY_COUNTS)
    for recalls in (inverse, softmax):
        assert min(recalls) >= 0.5, recalls  # every domain is predicted
        assert sum(recalls) > sum(plain) + 0.3  # balanced accuracy gains
    # the training targets were counted: 200 x 16 images, in proportion
    assert int(clf.seen_counts.sum()) == 3200
    assert clf.seen_counts[0] > 10 * clf.seen_counts[2] > 0


def test_balanced_losses_equal_their_formulas():
    logits = torch.tensor([[1.0, -0.5, 0.2], [0.1, 0.3, -1.0], [0.0, 2.0, 0.5]])
    target = torch.tensor([0, 2, 1])
    counts = [7, 2, 0]
    freq = torch.tensor([8 / 12, 3 / 12, 1 / 12])  # add-one smoothing
    nll = -torch.log_softmax(logits, 1)[torch.arange(3), target]
    weight = 1 / (3 * freq[target])
    inverse = DomainClassifier(3, 4, loss_balance='inverse_frequency', class_counts=counts)
    torch.testing.assert_close(inverse.loss(logits, target), (weight * nll).sum() / weight.sum())
    shifted = logits + freq.log()
    expected = -torch.log_softmax(shifted, 1)[torch.arange(3), target].mean()
    softmax = DomainClassifier(3, 4, loss_balance='balanced_softmax', class_counts=counts)
    torch.testing.assert_close(softmax.loss(logits, target), expected)
    # counted: in training only, before the loss
    running = DomainClassifier(3, 4, loss_balance='balanced_softmax')
    running.train()
    running.loss(logits, target)
    assert running.seen_counts.tolist() == [1, 1, 1]
    running.eval()
    running.loss(logits, target)
    assert running.seen_counts.tolist() == [1, 1, 1]
    assert 'seen_counts' in running.state_dict()
    assert 'seen_counts' not in DomainClassifier(3, 4).state_dict()
    with pytest.raises(ValueError, match='loss_balance must be one of'):
        DomainClassifier(3, 4, loss_balance='focal')
    with pytest.raises(ValueError, match='class_counts must be 3 counts'):
        DomainClassifier(3, 4, class_counts=[1, 2])


# ----------------------------------------------------------------------
# input='neck': mean and std of every neck level
# ----------------------------------------------------------------------
def test_neck_input_pools_mean_and_std_of_every_level_over_valid_tokens():
    torch.manual_seed(0)
    shapes = torch.tensor([[2, 3], [1, 2]])  # 6 + 2 tokens
    feats = torch.randn(2, 8, 4)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, [2, 5, 7]] = True  # padding of image 0 in both levels
    pooled = DomainClassifier.pool_levels(feats, mask, shapes)
    assert pooled.shape == (2, 2 * 2 * 4)
    for b in range(2):
        expected = []
        for lo, hi in ((0, 6), (6, 8)):
            valid = [i for i in range(lo, hi) if not mask[b, i]]
            x = feats[b, valid].double()
            expected += [x.mean(0), (x.var(0, unbiased=False) + 1e-6).sqrt()]
        torch.testing.assert_close(pooled[b].double(), torch.cat(expected), rtol=1e-5, atol=1e-6)
    clf = DomainClassifier(3, embed_dims=4, hidden_dims=16, input='neck', num_levels=2)
    assert clf.mlp[0].in_features == 16
    torch.testing.assert_close(clf(feats, mask, shapes), clf.mlp(pooled))
    with pytest.raises(ValueError, match='needs the spatial_shapes of 2 levels'):
        clf(feats, mask)
    with pytest.raises(ValueError, match='input must be one of'):
        DomainClassifier(3, 4, input='backbone_v2')
    # the default is today's classifier: same parameters, same shapes
    default = DomainClassifier(3, embed_dims=8, hidden_dims=16)
    assert {k: tuple(v.shape) for k, v in default.state_dict().items()} == {
        'mlp.0.weight': (16, 8), 'mlp.0.bias': (16, ), 'mlp.3.weight': (3, 16),
        'mlp.3.bias': (3, )}
