# Copyright (c) mmgem contributors. All rights reserved.
"""RoutingTable: the model's one copy of the GEM plan, in the form routing needs.

The table holds the routing rule on the host (the ``(K, M)`` int64 quota and
thresholds as CPU tensors, the dataset names that key the image hash, the
plan's hash), so a forward reads nothing from the device; and, when it was
given one, the :class:`~mmgem.planner.GEMPlan` itself (loads, similarity,
provenance), which :class:`~mmgem.engine.hooks.GEMPlannerHook` checks against
the data. Checkpoints hold it once, as this module's extra state in the
model's state dict (``routing_table._extra_state``): the canonical JSON of the
plan's own dict (or, for a table given as bare quota and thresholds, of those)
as a uint8 tensor, so that everything that walks a state dict as tensors
(distributed broadcasts, ``torch.jit`` tracing, ``weights_only`` loads) takes it.
"""
import json
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from mmgem.planner import GEMPlan
from mmgem.planner.hashing import threshold_errors

from .plan_routing import plan_is_installed, quantile_thresholds

#: Version of :meth:`RoutingTable.get_extra_state`'s format.
TABLE_VERSION = 1
#: State-dict keys of the plan buffers of checkpoints made before the table.
LEGACY_KEYS = ('plan_quota', 'plan_thresholds', 'plan_dataset_names', 'plan_hash')


def encode_table(data: Dict[str, Any]) -> Tensor:
    """A saved table as a uint8 tensor of its canonical JSON.

    Args:
        data (dict): Plain data (a :meth:`RoutingTable.get_extra_state` dict).

    Returns:
        Tensor: 1-d uint8 CPU tensor.
    """
    text = json.dumps(data, sort_keys=True, separators=(',', ':'), allow_nan=False)
    return torch.tensor(list(text.encode('utf-8')), dtype=torch.uint8)


def decode_table(state: Any) -> Dict[str, Any]:
    """The dict of :func:`encode_table` (a dict passes through).

    Args:
        state (Tensor | dict): A saved table.

    Returns:
        dict: The table's plain data.
    """
    if torch.is_tensor(state):
        try:
            state = json.loads(bytes(state.to(torch.uint8).tolist()).decode('utf-8'))
        except (UnicodeDecodeError, ValueError) as err:
            raise ValueError(f'routing_table: the saved table is not UTF-8 JSON: {err}') from err
    if not isinstance(state, dict) or state.get('version') != TABLE_VERSION:
        version = state.get('version') if isinstance(state, dict) else None
        raise ValueError(f'routing_table: unsupported saved table {type(state).__name__} '
                         f'version {version!r}; expected version {TABLE_VERSION}')
    return state


class RoutingTable(nn.Module):
    """The GEM plan of a detector (what routing reads, and the plan behind it).

    Args:
        num_datasets (int): K, the rows of the table.
        num_experts (int): M, the columns.
    """

    def __init__(self, num_datasets: int, num_experts: int) -> None:
        super().__init__()
        self.shape = (int(num_datasets), int(num_experts))
        self.clear()

    def clear(self) -> None:
        """Forget the plan (an all-zeros table routes nothing)."""
        self.quota = torch.zeros(self.shape, dtype=torch.long)
        self.thresholds = torch.zeros(self.shape, dtype=torch.long)
        self.dataset_names: Tuple[str, ...] = ()
        self.plan_hash = ''
        self.plan: Optional[GEMPlan] = None
        #: where the plan came from (for messages): a file, 'checkpoint', ...
        self.source = ''

    def attach(self, plan: GEMPlan, source: str = 'plan') -> None:
        """Route by ``plan`` and keep it.

        Args:
            plan (GEMPlan): The plan; its quota must be ``(K, M)``.
            source (str): Where it came from, for messages.
        """
        self.set_routing(plan.quota, plan.thresholds, plan.dataset_names, plan.hash)
        self.plan = plan
        self.source = source

    def set_routing(self, quota: np.ndarray, thresholds: Optional[np.ndarray] = None,
                    dataset_names: Optional[Sequence[str]] = None, plan_hash: str = '') -> None:
        """Route by a bare quota table (no plan object is kept).

        Args:
            quota (np.ndarray): ``(K, M)`` non-negative integer quota.
            thresholds (np.ndarray, optional): ``(K, M)`` int64 routing
                thresholds; None routes by the quantiles of the quota.
            dataset_names (Sequence[str], optional): The K names keying the
                image hash; None keeps the current ones.
            plan_hash (str): A label of the table. Defaults to ``''``.
        """
        quota = np.asarray(quota)
        if quota.shape != self.shape:
            raise ValueError(f'plan quota has shape {quota.shape}, the model has '
                             f'num_datasets={self.shape[0]} and num_experts={self.shape[1]}')
        if not np.issubdtype(quota.dtype, np.integer) and not np.array_equal(
                quota, np.round(quota)):
            raise ValueError(f'plan quota must be integers, got {quota}')
        if np.any(quota < 0):
            raise ValueError(f'plan quota has negative entries: {quota}')
        quota_t = torch.from_numpy(quota.astype(np.int64))
        if thresholds is None:
            thresholds_t = quantile_thresholds(quota_t)
        else:
            thresholds_t = torch.from_numpy(np.asarray(thresholds).astype(np.int64))
            problems = threshold_errors(quota, thresholds_t.numpy())
            if problems:
                raise ValueError('plan thresholds do not fit the quota: ' + '; '.join(problems))
        names = self.dataset_names if dataset_names is None else self._check_names(
            dataset_names)
        self.quota, self.thresholds, self.dataset_names = quota_t, thresholds_t, names
        self.plan_hash, self.plan, self.source = str(plan_hash), None, ''

    def _check_names(self, dataset_names: Sequence[str]) -> Tuple[str, ...]:
        names = tuple(str(name) for name in dataset_names)
        if len(names) != self.shape[0]:
            raise ValueError(f'{len(names)} plan dataset names {list(names)} for a model of '
                             f'num_datasets={self.shape[0]}')
        if not all(names):
            raise ValueError(f'plan dataset names {list(names)} must not be empty')
        return names

    def is_set(self) -> bool:
        """bool: Whether the table holds a plan (a non-zero quota)."""
        return plan_is_installed(self.quota)

    def host(self) -> Tuple[Tensor, Tuple[str, ...], Tensor]:
        """The quota table, dataset names and thresholds on the host.

        Returns:
            tuple[Tensor, tuple[str], Tensor]: ``(K, M)`` int64 CPU quota,
            the names (``()`` when none are set), ``(K, M)`` int64 CPU
            thresholds.
        """
        return self.quota, self.dataset_names, self.thresholds

    def get_extra_state(self) -> Tensor:
        """The table as :func:`encode_table` data (what checkpoints store once).

        Returns:
            Tensor: The encoded dict of ``version`` and either ``plan``
            (:meth:`GEMPlan.to_dict`), or ``quota``, ``thresholds``,
            ``dataset_names`` and ``hash`` of a bare table (all empty without
            a plan).
        """
        if self.plan is not None:
            return encode_table(dict(version=TABLE_VERSION, plan=self.plan.to_dict()))
        return encode_table(dict(version=TABLE_VERSION, quota=self.quota.tolist(),
                                 thresholds=self.thresholds.tolist(),
                                 dataset_names=list(self.dataset_names), hash=self.plan_hash))

    def set_extra_state(self, state: Any) -> None:
        """Restore :meth:`get_extra_state` (a checkpoint's table).

        Args:
            state (Tensor | dict): The saved table.
        """
        state = decode_table(state)
        if state.get('plan') is not None:
            plan = GEMPlan.from_dict(state['plan'], source='checkpoint plan')
            if tuple(plan.quota.shape) != self.shape:
                raise ValueError(f'checkpoint plan has {plan.quota.shape[0]} datasets x '
                                 f'{plan.quota.shape[1]} experts, the model '
                                 f'{self.shape[0]} x {self.shape[1]}')
            self.attach(plan, source='checkpoint')
            return
        self.clear()
        quota = np.asarray(state.get('quota'), dtype=np.int64).reshape(self.shape)
        if not quota.any():
            return
        thresholds = np.asarray(state.get('thresholds'), dtype=np.int64).reshape(self.shape)
        self.set_routing(quota, thresholds if thresholds.any() else None,
                         state.get('dataset_names') or None, state.get('hash', ''))
        if not thresholds.any():  # a table saved before plans carried thresholds:
            self.thresholds = torch.zeros(self.shape, dtype=torch.long)  # routing refuses it


def plan_of_state_dict(state_dict: Dict[str, Any], prefix: str = '') -> Optional[GEMPlan]:
    """The plan a model state dict holds (None for none or a bare table).

    Args:
        state_dict (dict): A model's state dict.
        prefix (str): The model's key prefix. Defaults to ``''``.

    Returns:
        GEMPlan | None: The plan.
    """
    state = state_dict.get(prefix + 'routing_table._extra_state')
    if state is None:
        return None
    plan = decode_table(state).get('plan')
    return None if plan is None else GEMPlan.from_dict(plan, source='checkpoint plan')


def upgrade_legacy_state_dict(state_dict: Dict[str, Any], prefix: str = '',
                              plan: Optional[Dict[str, Any]] = None) -> None:
    """Turn a checkpoint's plan buffers (before the table) into the table.

    Checkpoints made before :class:`RoutingTable` hold the plan as buffers
    ``plan_quota``, ``plan_thresholds``, ``plan_dataset_names`` (UTF-8 bytes)
    and ``plan_hash`` (ASCII bytes), and, when saved by the planner hook, the
    whole plan in ``checkpoint['gem_plan']``. They are replaced, in place, by
    ``routing_table._extra_state``: the plan when given, else the bare table.

    Args:
        state_dict (dict): A model's state dict, changed in place.
        prefix (str): The model's key prefix. Defaults to ``''``.
        plan (dict, optional): ``checkpoint['gem_plan']``.
    """
    legacy = {k: state_dict.pop(prefix + k) for k in LEGACY_KEYS if prefix + k in state_dict}
    key = prefix + 'routing_table._extra_state'
    if key in state_dict or not (legacy or plan):
        return
    if plan is not None:
        state_dict[key] = encode_table(dict(version=TABLE_VERSION, plan=plan))
        return

    def text(raw: Tensor) -> str:
        return bytes(raw.tolist()).rstrip(b'\0').decode('utf-8')

    names = [text(row) for row in legacy['plan_dataset_names']] if 'plan_dataset_names' in \
        legacy else []
    zeros = torch.zeros_like(legacy['plan_quota'])
    state_dict[key] = encode_table(dict(
        version=TABLE_VERSION, quota=legacy['plan_quota'].tolist(),
        thresholds=legacy.get('plan_thresholds', zeros).tolist(),
        dataset_names=names if all(names) else [],
        hash=text(legacy['plan_hash']) if 'plan_hash' in legacy else ''))


def upgrade_legacy_plan_buffers(state_dict: Dict[str, Any], prefix: str, *args) -> None:
    """``load_state_dict`` pre-hook of a detector with a :class:`RoutingTable`.

    Loads checkpoints made before the table (see
    :func:`upgrade_legacy_state_dict`; their ``checkpoint['gem_plan']``, read
    by the planner hook, is not visible here).

    Args:
        state_dict (dict): The state dict being loaded, changed in place.
        prefix (str): The detector's key prefix.
        *args: The rest of PyTorch's pre-hook arguments (unused).
    """
    upgrade_legacy_state_dict(state_dict, prefix)
