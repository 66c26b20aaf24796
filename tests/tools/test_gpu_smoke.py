# Copyright (c) mmgem contributors. All rights reserved.
"""tools/gpu_smoke.sh in its CPU mode: the same steps as on a GPU, so the
script a lent GPU machine runs cannot rot unnoticed."""
import os
import subprocess
import sys


def test_gpu_smoke_script_cpu_mode(repo_root, tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1',
               PYTHONPATH=str(repo_root))
    proc = subprocess.run(
        ['bash', str(repo_root / 'tools' / 'gpu_smoke.sh'), '--cpu', '--out',
         str(tmp_path)], cwd=repo_root, env=env, capture_output=True,
        text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (tmp_path / 'gpu_smoke_summary.md').read_text()
    assert '- mmcv: compiled ops (CPU mode)' in summary
    lines = summary.splitlines()
    fp32 = [line for line in lines if line.startswith('- fp32: 2 iterations')]
    amp = [line for line in lines if line.startswith('- bf16-amp: 2 iterations')]
    assert len(fp32) == len(amp) == 1
    assert fp32[0].endswith('GlobalNormOptimWrapper')
    # --amp on a CPU: bf16 autocast through the global-norm AMP wrapper
    assert amp[0].endswith('GlobalNormAmpOptimWrapper')
    assert '| batch | method | ms | / dense | / gem |' in summary
    assert '| 2 | gem |' in summary and '| 2 | moe |' in summary
    assert summary.rstrip().endswith('s.') and 'All steps passed' in summary
    # the run that failed would say where
    bad = subprocess.run(
        ['bash', str(repo_root / 'tools' / 'gpu_smoke.sh'), '--no-such-flag'],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and 'unknown argument --no-such-flag' in bad.stderr
