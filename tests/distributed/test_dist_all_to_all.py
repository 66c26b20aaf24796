# Copyright (c) mmgem contributors. All rights reserved.
"""The differentiable uneven all-to-all on 2 real gloo processes."""
import torch
from dist_utils import run_distributed

from mmgem.models.layers.ep_all_to_all import all_to_all, gather_count_matrix
from mmgem.models.layers.ep_exchange_stats import exchange_stats

# SPLITS[s][d]: rows rank s sends to rank d (one empty block on purpose).
SPLITS = [[2, 3], [4, 0]]
COLS = 3


def _rows(rank):
    gen = torch.Generator().manual_seed(rank)
    return torch.randn(sum(SPLITS[rank]), COLS, generator=gen)


def _weights(rank):
    gen = torch.Generator().manual_seed(10 + rank)
    return torch.randn(sum(s[rank] for s in SPLITS), COLS, generator=gen)


def _worker(rank, world_size, out_dir):
    exchange_stats().reset()
    send = SPLITS[rank]
    matrix = gather_count_matrix(torch.tensor(send))
    x = _rows(rank).requires_grad_()
    recv = matrix[:, rank].tolist()
    out = all_to_all(x, send, recv)
    (out * _weights(rank)).sum().backward()
    return dict(matrix=matrix, out=out.detach(), grad=x.grad,
                stats=exchange_stats().snapshot())


def test_all_to_all_forward_backward_and_bytes(tmp_path):
    results = run_distributed(_worker, 2, tmp_path)
    for r, res in enumerate(results):
        assert res['matrix'].tolist() == SPLITS
        # forward: the blocks every rank sent to r, in source-rank order
        blocks = []
        for s in range(2):
            start = sum(SPLITS[s][:r])
            blocks.append(_rows(s)[start:start + SPLITS[s][r]])
        torch.testing.assert_close(res['out'], torch.cat(blocks), rtol=0,
                                   atol=0)
        # backward: the loss weights of the rows where r's blocks landed
        grads = []
        for d in range(2):
            offset = sum(SPLITS[s][d] for s in range(r))
            grads.append(_weights(d)[offset:offset + SPLITS[r][d]])
        torch.testing.assert_close(res['grad'], torch.cat(grads), rtol=0,
                                   atol=0)
        # bytes: rows to and from the other rank, forward and backward
        other = 1 - r
        row_bytes = COLS * 4
        moved = (SPLITS[r][other] + SPLITS[other][r]) * row_bytes
        assert res['stats'] == dict(sent_bytes=moved, received_bytes=moved,
                                    sent_rows=SPLITS[r][other], exchanges=2)
