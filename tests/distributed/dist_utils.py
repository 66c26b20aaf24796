# Copyright (c) mmgem contributors. All rights reserved.
"""Run a function in real processes joined by a gloo process group.

``run_distributed(fn, world_size, tmp_path, *args)`` spawns ``world_size``
processes with ``torch.multiprocessing`` (spawn start method), initialises
``torch.distributed`` with the gloo backend on 127.0.0.1 and a free port (and
the ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_*`` variables MMEngine's
``init_dist('pytorch')`` reads), calls ``fn(rank, world_size, out_dir,
*args)`` in each, and returns what every rank returned (saved with
``torch.save``), in rank order. An exception in any process fails the test
with that process's traceback. A collective that waits longer than
``COLLECTIVE_TIMEOUT_S`` (a hang, e.g. ranks sending different dtypes into
one exchange) raises instead of blocking the test suite.
"""
import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

#: Seconds a gloo collective may wait before it fails (gloo's default: 30 min).
COLLECTIVE_TIMEOUT_S = 120


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str,
            fn: Callable, args: tuple, init_pg: bool) -> None:
    os.environ.update(
        OMP_NUM_THREADS='1',
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        CUDA_VISIBLE_DEVICES='')
    torch.set_num_threads(1)
    if init_pg:
        dist.init_process_group(
            'gloo',
            init_method=f'tcp://127.0.0.1:{port}',
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    try:
        result = fn(rank, world_size, out_dir, *args)
        torch.save(result, os.path.join(out_dir, f'result_rank{rank}.pth'))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_distributed(fn: Callable,
                    world_size: int,
                    out_dir: Path,
                    *args: Any,
                    init_pg: bool = True) -> List[Any]:
    """Run ``fn`` on ``world_size`` gloo ranks and collect the results.

    Args:
        fn (Callable): A module-level function
            ``fn(rank, world_size, out_dir, *args)``.
        world_size (int): Number of processes.
        out_dir (Path): A directory for results (and ``fn``'s files).
        *args: Picklable arguments for ``fn``.
        init_pg (bool): Initialise the process group before calling ``fn``
            (False leaves it to ``fn``, e.g. to MMEngine's Runner).

    Returns:
        list: ``fn``'s return value of every rank, in rank order.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mp.spawn(
        _worker,
        args=(world_size, free_port(), str(out_dir), fn, args, init_pg),
        nprocs=world_size,
        join=True)
    return [
        torch.load(out_dir / f'result_rank{r}.pth', weights_only=False)
        for r in range(world_size)
    ]
