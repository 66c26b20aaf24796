# Copyright (c) mmgem contributors. All rights reserved.
"""The GEM plan: the compiled quota table, its routing rule and provenance."""
import hashlib
import json
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..utils.fileio import atomic_write
from .errors import PlanError
from .hashing import ImageId, image_bucket, route_bucket
from .lp import LPSolution

PLAN_FORMAT = 'mmgem.GEMPlan'
PLAN_VERSION = 1


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(',', ':'), allow_nan=False)


class GEMPlan:
    """A global expert mapping: which experts serve which dataset.

    ``quota[d, e]`` is the number of images of dataset d per epoch routed to
    expert e; each row sums to the dataset's images per epoch. A dataset with
    one nonzero entry goes entirely to that expert; a sharded one is spread
    by :func:`mmgem.planner.hashing.route_bucket` over the stable image hash,
    in the planned proportions.

    Build plans with :func:`mmgem.planner.make_plan`; this class holds the
    result and its inputs, serialises to JSON without loss, prints as a table
    and draws as a heat map.

    Args:
        dataset_names (Sequence[str]): The K dataset names, in plan order.
        loads (Sequence[float]): Loads n_d as given (expected images per
            epoch).
        images (Sequence[int]): Images per epoch after rounding (row sums).
        similarity (np.ndarray): K x K similarity S.
        num_experts (int): M.
        capacity_factor (float, optional): As given; None for no limit.
        capacity (int, optional): Images per expert per epoch,
            ``ceil(capacity_factor * sum(images) / M)``; None for no limit.
        beta (float): Fairness exponent of the weights.
        solver (str): The LP solver that produced the plan.
        quota (np.ndarray): (K, M) int64 quota table.
        expert_anchor (Sequence[int]): Anchor dataset of each expert.
        lp (LPSolution): The LP optimum.
        rounded_cost (float): The LP objective of the rounded plan.
    """

    def __init__(self, dataset_names: Sequence[str], loads: Sequence[float],
                 images: Sequence[int], similarity: np.ndarray, num_experts: int,
                 capacity_factor: Optional[float], capacity: Optional[int], beta: float,
                 solver: str, quota: np.ndarray, expert_anchor: Sequence[int],
                 lp: LPSolution, rounded_cost: float) -> None:
        self.dataset_names: Tuple[str, ...] = tuple(str(n) for n in dataset_names)
        self.loads = np.asarray(loads, dtype=np.float64)
        self.images = np.asarray(images, dtype=np.int64)
        self.similarity = np.asarray(similarity, dtype=np.float64)
        self.num_experts = int(num_experts)
        self.capacity_factor = None if capacity_factor is None else float(capacity_factor)
        self.capacity = None if capacity is None else int(capacity)
        self.beta = float(beta)
        self.solver = str(solver)
        self.quota = np.asarray(quota, dtype=np.int64)
        self.expert_anchor = np.asarray(expert_anchor, dtype=np.int64)
        self.lp = lp
        self.rounded_cost = float(rounded_cost)
        self._index = {n: i for i, n in enumerate(self.dataset_names)}
        k, m = len(self.dataset_names), self.num_experts
        if self.quota.shape != (k, m):
            raise PlanError(f'quota has shape {self.quota.shape}; expected ({k}, {m})')
        if not np.array_equal(self.quota.sum(1), self.images):
            raise PlanError('quota rows must sum to the images per epoch '
                            f'{self.images.tolist()}; they sum to {self.quota.sum(1).tolist()}')
        #: wall seconds of the LP and of the whole plan (not serialised)
        self.timings: Dict[str, float] = {}

    # ----------------------------------------------------------- derived
    @property
    def num_datasets(self) -> int:
        """int: K."""
        return len(self.dataset_names)

    @property
    def lp_bound(self) -> float:
        """float: Optimal LP value, a lower bound on every integral plan."""
        return float(self.lp.bound)

    @property
    def expert_loads(self) -> np.ndarray:
        """np.ndarray: (M,) int64 images per epoch routed to each expert."""
        return self.quota.sum(0)

    @property
    def weights(self) -> np.ndarray:
        """np.ndarray: (K,) cost weights ``n^beta / sum(n^beta)``."""
        return dataset_weights(self.images, self.beta)

    @property
    def cost_matrix(self) -> np.ndarray:
        """np.ndarray: K x K ``w[d] * (1 - S[d, c])``."""
        return self.weights[:, None] * (1.0 - self.similarity)

    @property
    def groups(self) -> List[Dict[str, Any]]:
        """list[dict]: Expert groups: anchor name, experts, member datasets."""
        out = []
        for a in dict.fromkeys(self.expert_anchor.tolist()):
            experts = np.flatnonzero(self.expert_anchor == a).tolist()
            members = [self.dataset_names[d] for d in
                       np.flatnonzero(self.quota[:, experts].sum(1) > 0)]
            out.append(dict(anchor=self.dataset_names[a], experts=experts, datasets=members))
        return out

    def dataset_index(self, dataset: Union[str, int]) -> int:
        """Return the row of a dataset.

        Args:
            dataset (str | int): Name or index.

        Returns:
            int: The index.
        """
        if isinstance(dataset, (int, np.integer)) and not isinstance(dataset, bool):
            if not 0 <= int(dataset) < self.num_datasets:
                raise PlanError(f'dataset index {dataset} is outside [0, {self.num_datasets})')
            return int(dataset)
        if dataset not in self._index:
            raise PlanError(f'dataset {dataset!r} is not in the plan; planned datasets: '
                            f'{list(self.dataset_names)}')
        return self._index[dataset]

    def experts_of(self, dataset: Union[str, int]) -> List[int]:
        """Experts that serve a dataset.

        Args:
            dataset (str | int): Name or index.

        Returns:
            list[int]: Expert indices with a nonzero quota, ascending.
        """
        return np.flatnonzero(self.quota[self.dataset_index(dataset)]).tolist()

    def expert_of(self, dataset: Union[str, int], image_id: ImageId) -> int:
        """The expert of one image: the plan's routing rule.

        A dataset served by one expert sends every image there; a sharded one
        uses the stable BLAKE2b bucket of ``(dataset name, image id)`` and the
        cumulative quota row, identical on every process.

        Args:
            dataset (str | int): Name or index of the image's dataset.
            image_id (int | str): The image's id inside its dataset.

        Returns:
            int: The expert index.
        """
        d = self.dataset_index(dataset)
        row = self.quota[d]
        nz = np.flatnonzero(row)
        if nz.size == 1:
            return int(nz[0])
        return route_bucket(row, image_bucket(self.dataset_names[d], image_id))

    # ----------------------------------------------------- serialisation
    def _payload(self) -> Dict[str, Any]:
        return dict(
            format=PLAN_FORMAT,
            version=PLAN_VERSION,
            dataset_names=list(self.dataset_names),
            loads=[float(v) for v in self.loads],
            images=[int(v) for v in self.images],
            similarity=[[float(v) for v in row] for row in self.similarity],
            num_experts=self.num_experts,
            capacity_factor=self.capacity_factor,
            capacity=self.capacity,
            beta=self.beta,
            solver=self.solver,
            quota=[[int(v) for v in row] for row in self.quota],
            expert_anchor=[int(v) for v in self.expert_anchor],
            lp=self.lp.to_dict(),
            rounded_cost=self.rounded_cost)

    @property
    def hash(self) -> str:
        """str: Hex SHA-256 of the canonical JSON of the whole plan."""
        return hashlib.sha256(_canonical(self._payload()).encode('utf-8')).hexdigest()

    def to_dict(self) -> Dict[str, Any]:
        """Return the plan as plain Python data (what checkpoints store).

        Returns:
            dict: JSON-ready; includes ``'hash'``.
        """
        data = self._payload()
        data['hash'] = self.hash
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any], source: str = 'plan dict') -> 'GEMPlan':
        """Rebuild a plan written by :meth:`to_dict`.

        Args:
            data (dict): The dict.
            source (str): What the dict came from, for error messages.

        Returns:
            GEMPlan: The plan; its hash is checked against ``data['hash']``.
        """
        if not isinstance(data, dict) or data.get('format') != PLAN_FORMAT:
            raise PlanError(f'{source} is not a GEM plan (format '
                            f'{data.get("format") if isinstance(data, dict) else None!r})')
        if data.get('version') != PLAN_VERSION:
            raise PlanError(f'{source} has plan version {data.get("version")!r}; this mmgem '
                            f'reads version {PLAN_VERSION}')
        try:
            k = len(data['dataset_names'])
            plan = cls(
                dataset_names=data['dataset_names'], loads=data['loads'],
                images=data['images'],
                similarity=np.asarray(data['similarity'], dtype=np.float64).reshape(k, k),
                num_experts=data['num_experts'], capacity_factor=data['capacity_factor'],
                capacity=data['capacity'], beta=data['beta'], solver=data['solver'],
                quota=np.asarray(data['quota'], dtype=np.int64).reshape(
                    k, data['num_experts']),
                expert_anchor=data['expert_anchor'], lp=LPSolution.from_dict(data['lp']),
                rounded_cost=data['rounded_cost'])
        except KeyError as err:
            raise PlanError(f'{source} misses the field {err.args[0]!r}') from err
        except (TypeError, ValueError) as err:
            if isinstance(err, PlanError):
                raise
            raise PlanError(f'{source} is malformed: {err}') from err
        if 'hash' in data and data['hash'] != plan.hash:
            raise PlanError(f'{source} hash mismatch: stored {data["hash"]}, content hashes to '
                            f'{plan.hash}; the plan was edited or corrupted')
        return plan

    def to_json(self) -> str:
        """Serialise to JSON: one top-level field per line, matrices row-wise.

        Floats are written with ``repr`` so :meth:`from_json` restores them
        bit for bit, and ``to_json(from_json(s)) == s``.

        Returns:
            str: The JSON text.
        """
        data = self.to_dict()
        lines = []
        for key in sorted(data):
            value = data[key]
            if (isinstance(value, list) and value
                    and all(isinstance(r, list) for r in value)):
                rows = ',\n    '.join(_canonical(r) for r in value)
                text = f'[\n    {rows}\n  ]'
            elif key == 'lp':
                inner = []
                for lk in sorted(value):
                    lv = value[lk]
                    if lk == 'x' and lv:
                        rows = ',\n      '.join(_canonical(r) for r in lv)
                        inner.append(f'    "x": [\n      {rows}\n    ]')
                    else:
                        inner.append(f'    {json.dumps(lk)}: {_canonical(lv)}')
                text = '{\n' + ',\n'.join(inner) + '\n  }'
            else:
                text = _canonical(value)
            lines.append(f'  {json.dumps(key)}: {text}')
        return '{\n' + ',\n'.join(lines) + '\n}\n'

    @classmethod
    def from_json(cls, text: str, source: str = 'plan JSON') -> 'GEMPlan':
        """Parse :meth:`to_json` output.

        Args:
            text (str): The JSON text.
            source (str): What the text came from, for error messages.

        Returns:
            GEMPlan: The plan.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise PlanError(f'{source} is not valid JSON: {err}') from err
        return cls.from_dict(data, source=source)

    def save(self, path: str) -> str:
        """Write the JSON atomically (temporary file + rename).

        Args:
            path (str): Destination file.

        Returns:
            str: The absolute path written.
        """
        atomic_write(path, self.to_json())
        return osp.abspath(path)

    @classmethod
    def load(cls, path: str) -> 'GEMPlan':
        """Read a plan written by :meth:`save`.

        Args:
            path (str): The JSON file.

        Returns:
            GEMPlan: The plan.
        """
        if not osp.isfile(path):
            raise PlanError(f'plan file {path!r} does not exist')
        with open(path, encoding='utf-8') as f:
            return cls.from_json(f.read(), source=f'plan file {path!r}')

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GEMPlan) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.hash)

    # ------------------------------------------------------------ display
    def summary(self) -> str:
        """One paragraph of the plan's key numbers.

        Returns:
            str: Text.
        """
        cap = 'off' if self.capacity is None else (
            f'{self.capacity} images/expert (factor {self.capacity_factor:g})')
        bound = self.lp_bound
        gap = (self.rounded_cost / bound - 1) * 100 if bound > 1e-12 else None
        gap_s = f'{gap:+.2f}%' if gap is not None else f'{self.rounded_cost - bound:+.4f} abs'
        return (f'GEM plan {self.hash[:12]}: K={self.num_datasets} datasets, '
                f'M={self.num_experts} experts, N={int(self.images.sum())} images/epoch, '
                f'capacity {cap}, beta={self.beta:g}, solver {self.solver}\n'
                f'LP bound {bound:.6f}, rounded cost {self.rounded_cost:.6f} ({gap_s}), '
                f'max expert load {int(self.expert_loads.max())}')

    def table(self, max_experts: int = 16) -> str:
        """Datasets x experts table of the quota.

        Args:
            max_experts (int): Above this many experts each dataset lists its
                experts instead of a full row. Defaults to 16.

        Returns:
            str: Text table with expert loads, capacity and per-dataset cost.
        """
        names = list(self.dataset_names)
        width = max([len(n) for n in names] + [12])
        cost = self.cost_matrix[:, self.expert_anchor]
        share = self.quota / self.images[:, None]
        per_ds = (cost * share).sum(1)
        lines = []
        if self.num_experts <= max_experts:
            cw = max(6, len(str(int(self.quota.max()))) + 1)
            head = f'{"dataset":<{width}} {"images":>8} |' + ''.join(
                f'{"e" + str(e):>{cw}}' for e in range(self.num_experts)) + ' |    cost'
            lines.append(head)
            lines.append('-' * len(head))
            for d, n in enumerate(names):
                cells = ''.join(f'{(int(q) if q else "."):>{cw}}' for q in self.quota[d])
                lines.append(f'{n:<{width}} {int(self.images[d]):>8} |{cells} | '
                             f'{per_ds[d]:7.4f}')
            lines.append('-' * len(head))
            loads = ''.join(f'{int(v):>{cw}}' for v in self.expert_loads)
            lines.append(f'{"expert load":<{width}} {int(self.images.sum()):>8} |{loads} | '
                         f'{self.rounded_cost:7.4f}')
            cap = '-' if self.capacity is None else str(self.capacity)
            lines.append(f'{"capacity":<{width}} {"":>8} |' +
                         ''.join(f'{cap:>{cw}}' for _ in range(self.num_experts)) + ' |')
            anchors = ''.join(f'{self.dataset_names[a][:cw - 1]:>{cw}}'
                              for a in self.expert_anchor)
            lines.append(f'{"anchor":<{width}} {"":>8} |{anchors} |')
        else:
            lines.append(f'{"dataset":<{width}} {"images":>8}    cost  experts (images)')
            for d, n in enumerate(names):
                parts = ', '.join(f'e{e}:{int(self.quota[d, e])}' for e in self.experts_of(d))
                lines.append(f'{n:<{width}} {int(self.images[d]):>8} {per_ds[d]:7.4f}  {parts}')
            loads = self.expert_loads
            lines.append(f'expert loads: min {int(loads.min())}, max {int(loads.max())}, '
                         f'capacity {self.capacity if self.capacity is not None else "off"}')
        return '\n'.join(lines)

    def __str__(self) -> str:
        return self.summary() + '\n' + self.table()

    def __repr__(self) -> str:
        return (f'GEMPlan(K={self.num_datasets}, M={self.num_experts}, '
                f'hash={self.hash[:12]})')

    def plot(self, path: str, dpi: int = 120) -> str:
        """Draw the quota as a datasets x experts heat map (PNG, atomic).

        Each cell shows the share of the dataset's images on the expert;
        the title carries the LP bound and the rounded cost.

        Args:
            path (str): Destination ``.png``.
            dpi (int): Resolution. Defaults to 120.

        Returns:
            str: The absolute path written.
        """
        from .visualization import draw_plan_heatmap
        return draw_plan_heatmap(self, path, dpi=dpi)


def dataset_weights(images: Sequence[float], beta: float) -> np.ndarray:
    """Cost weights ``w_d = n_d ** beta / sum_k n_k ** beta``.

    Args:
        images (Sequence[float]): Loads.
        beta (float): Fairness exponent in [0, 1].

    Returns:
        np.ndarray: (K,) weights summing to 1.
    """
    n = np.asarray(images, dtype=np.float64)
    w = n ** float(beta)
    return w / w.sum()
