# Copyright (c) mmgem contributors. All rights reserved.
"""tools/benchmark/soft_routing.py times top-1 and top-2 routing side by side."""
import re

from mmgem.models import GEMDINO
from tools.benchmark import soft_routing


def test_soft_routing_benchmark_prints_both_rows_and_their_ratio(tmp_path, monkeypatch):
    decodes = []
    real = GEMDINO.forward_decoder
    monkeypatch.setattr(GEMDINO, 'forward_decoder',
                        lambda self, *a, **k: decodes.append(1) or real(self, *a, **k))
    out = tmp_path / 'soft.md'
    text = soft_routing.main(['--warmup', '0', '--repeats', '1', '--batch-size', '2',
                              '--img-size', '128', '--threads', '1', '--out', str(out)])
    assert len(decodes) == 1 + 2  # one top-1 run, one top-2 run: the decoder 1 + 2 times
    assert out.read_text() == text
    hard = float(re.search(r'\| hard \(top-1 plan row\) \| ([\d.]+) \|', text).group(1))
    soft = float(re.search(r'\| soft \(top-2 plan rows\) \| ([\d.]+) \| ([\d.]+) \|',
                           text).group(1))
    ratio = float(re.search(r'top-2 / top-1 inference time: ([\d.]+)x', text).group(1))
    assert abs(ratio - soft / hard) < 0.02 * ratio
