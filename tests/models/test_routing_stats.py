# Copyright (c) mmgem contributors. All rights reserved.
"""Specialisation measure: NMI of dataset and expert, against hand-worked values."""
import math

import numpy as np
import torch

from mmgem.models.utils.routing_stats import (
    dataset_expert_counts,
    expert_dataset_nmi,
    specialisation_scalars,
    top_expert_share,
)


def _nmi_by_loops(counts):
    """Independent: plain Python sums over the cells, natural logs."""
    total = sum(sum(r) for r in counts)
    rows = [sum(r) / total for r in counts]
    cols = [sum(r[e] for r in counts) / total for e in range(len(counts[0]))]
    mi = 0.0
    for d, r in enumerate(counts):
        for e, c in enumerate(r):
            if c:
                p = c / total
                mi += p * math.log(p / (rows[d] * cols[e]))
    hd = -sum(p * math.log(p) for p in rows if p)
    he = -sum(p * math.log(p) for p in cols if p)
    return 2 * mi / (hd + he)


def test_hand_worked_values():
    # one expert per dataset: the expert tells the dataset -> 1
    assert expert_dataset_nmi(np.array([[5, 0], [0, 7]])) == 1.0
    # every dataset spread alike over the experts: independent -> 0
    assert expert_dataset_nmi(np.array([[2, 2], [3, 3]])) == 0.0
    # [[2, 0], [1, 1]] by hand: p = [[.5, 0], [.25, .25]], p(d) = (.5, .5),
    # p(e) = (.75, .25); I = .5 ln(.5/.375) + .25 ln(.25/.375) + .25 ln(.25/.125)
    mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    hd = math.log(2)
    he = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert math.isclose(expert_dataset_nmi(np.array([[2, 0], [1, 1]])),
                        2 * mi / (hd + he), rel_tol=1e-12)
    # degenerate tables
    assert expert_dataset_nmi(np.zeros((2, 3))) == 0.0
    assert expert_dataset_nmi(np.array([[4, 0]])) == 0.0


def test_random_tables_match_the_loop_formula():
    rng = np.random.default_rng(0)
    for _ in range(20):
        counts = rng.integers(0, 9, size=(rng.integers(2, 6), rng.integers(2, 6)))
        counts[0, 0] += 1
        counts[-1, -1] += 1
        assert math.isclose(expert_dataset_nmi(counts), _nmi_by_loops(counts.tolist()),
                            rel_tol=1e-9, abs_tol=1e-12)


def test_counts_skip_dropped_and_masked_tokens_and_shares():
    experts = torch.tensor([[0, 0, 1, -1], [2, 2, 2, 0]])
    ids = torch.tensor([1, 0])
    mask = torch.tensor([[True, True, True, True], [True, True, False, True]])
    counts = dataset_expert_counts(experts, ids, 2, 3, mask)
    assert counts.tolist() == [[1, 0, 2], [2, 1, 0]]
    assert top_expert_share(counts).tolist() == [2 / 3, 2 / 3]
    stats = [dict(token_experts=experts), dict(expert_tokens=torch.ones(3))]
    scalars = specialisation_scalars(stats, ids, 2, 3, ['d0', 'd2'], mask)
    assert list(scalars) == ['moe_nmi_d0']  # a layer without token_experts is skipped
    assert math.isclose(float(scalars['moe_nmi_d0']), _nmi_by_loops(counts.tolist()),
                        rel_tol=1e-6)
