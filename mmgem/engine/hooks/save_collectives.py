# Copyright (c) mmgem contributors. All rights reserved.
"""Collectives that every rank runs right before a checkpoint is saved.

MMEngine writes checkpoints on rank 0 only: ``Runner.save_checkpoint`` is
``master_only`` and calls ``before_save_checkpoint`` there, where no
collective can run. Some state lives on every rank, though: the expert
shards of expert-parallel training, the random states of every process. Its
hooks (``CheckpointHook``'s interval, last and best saves) call
``runner.save_checkpoint`` on *every* rank, so that call is the one point
where all ranks know a checkpoint is being written.

:func:`add_save_collective` wraps ``runner.save_checkpoint`` (once per
runner) so that, on every rank and before every save, each registered
function runs (a collective, e.g. an all-gather) and its result is kept for
the duration of the save; ``before_save_checkpoint`` hooks on rank 0 read it
with :func:`save_payload`. Nothing is gathered unless a checkpoint is
actually saved. Functions run in registration order, which is the same on
every rank (hooks register in ``before_run``, in priority order).

A checkpoint saved by calling ``runner.save_checkpoint`` on rank 0 alone
would block in those collectives: call it on every rank, as MMEngine's hooks
do.
"""
import functools
import inspect
from typing import Any, Callable, Dict, Optional

#: ``fn(runner, save_optimizer)`` -> payload
SaveCollective = Callable[[Any, bool], Any]

_COLLECTIVES = '_mmgem_save_collectives'
_PAYLOADS = '_mmgem_save_payloads'


def add_save_collective(runner, key: str, fn: SaveCollective) -> None:
    """Run ``fn`` on every rank before each checkpoint ``runner`` saves.

    Args:
        runner (Runner): The runner.
        key (str): Name of the payload (one function per key; registering a
            key again replaces its function).
        fn (Callable): ``fn(runner, save_optimizer)`` returning the payload;
            ``save_optimizer`` says whether this checkpoint holds the
            optimizer state (best checkpoints do not).
    """
    collectives: Optional[Dict[str, SaveCollective]] = getattr(
        runner, _COLLECTIVES, None)
    if collectives is None:
        collectives = {}
        setattr(runner, _COLLECTIVES, collectives)
        setattr(runner, _PAYLOADS, None)
        original = runner.save_checkpoint
        signature = inspect.signature(original)

        @functools.wraps(original)
        def save_checkpoint(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            save_optimizer = bool(bound.arguments.get('save_optimizer', True))
            payloads = {
                name: collective(runner, save_optimizer)
                for name, collective in collectives.items()
            }
            setattr(runner, _PAYLOADS, payloads)
            try:
                return original(*args, **kwargs)
            finally:
                setattr(runner, _PAYLOADS, None)

        runner.save_checkpoint = save_checkpoint
    collectives[key] = fn


def save_payload(runner, key: str) -> Optional[Any]:
    """The payload ``key`` of the save in progress.

    Args:
        runner (Runner): The runner.
        key (str): The name given to :func:`add_save_collective`.

    Returns:
        Any, optional: The payload, or None outside a wrapped save.
    """
    payloads = getattr(runner, _PAYLOADS, None)
    return None if payloads is None else payloads.get(key)
