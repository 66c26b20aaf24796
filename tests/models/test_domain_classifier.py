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
