# Copyright (c) mmgem contributors. All rights reserved.
"""Shared plumbing of the side-by-side timing scripts in tools/benchmark/."""
import argparse
import platform
import time
from typing import Callable

import torch


def add_timing_args(parser: argparse.ArgumentParser, warmup: int = 3,
                    repeats: int = 15) -> argparse.ArgumentParser:
    """Add ``--device --warmup --repeats --seed --threads --clock --out``.

    Args:
        parser (argparse.ArgumentParser): The script's parser.
        warmup (int): Default warm-up runs (excluded from the median).
        repeats (int): Default timed runs.

    Returns:
        argparse.ArgumentParser: ``parser``, for chaining.
    """
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--warmup', type=int, default=warmup)
    parser.add_argument('--repeats', type=int, default=repeats)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument(
        '--clock',
        choices=['wall', 'process'],
        default='wall',
        help='wall: elapsed time; process: CPU time of this process (robust '
        'on a shared CPU machine; use with --threads 1 and --device cpu)')
    parser.add_argument('--out', default=None, help='markdown results file')
    return parser


def setup_timing(args: argparse.Namespace) -> Callable[[], float]:
    """Apply ``--threads`` and return the clock chosen by ``--clock``.

    Args:
        args (argparse.Namespace): Parsed arguments of :func:`add_timing_args`.

    Returns:
        Callable[[], float]: ``time.process_time`` or ``time.perf_counter``.
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    return time.process_time if args.clock == 'process' else time.perf_counter


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU).

    Args:
        device (torch.device): The device timed.
    """
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """A readable name of the device a table was measured on.

    Args:
        device (torch.device): The device timed.

    Returns:
        str: The GPU's name, or the CPU's with the torch thread count.
    """
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads'
