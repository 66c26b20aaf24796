# Copyright (c) mmgem contributors. All rights reserved.
"""The GEM plan: the compiled quota table, its routing rule and provenance."""
import hashlib
import json
import math
import os.path as osp
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..utils.fileio import atomic_write
from .errors import PlanError
from .hashing import (
    ImageId,
    bucket_thresholds,
    expert_of_bucket,
    experts_of_buckets,
    image_bucket,
    image_buckets,
    threshold_errors,
)
from .lp import LPSolution
from .plan_schema import check_plan_fields, parse_plan_json, read_plan_file

PLAN_FORMAT = 'mmgem.GEMPlan'
PLAN_VERSION = 2
#: relative tolerance of the stored rounded cost against its recomputation
_COST_RTOL = 1e-9


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(',', ':'), allow_nan=False)


class GEMPlan:
    """A global expert mapping: which experts serve which dataset.

    ``quota[d, e]`` is the number of images of dataset d per epoch routed to
    expert e; each row sums to the dataset's images per epoch. The routing
    rule is the row of bucket ``thresholds[d]`` (:mod:`mmgem.planner.hashing`):
    cut at the dataset's training images when their ids were given
    (``id_digests[d]`` records which ones), so that the realised per-expert
    counts equal the quota exactly, else at the quantiles of the bucket range.

    Build plans with :func:`mmgem.planner.make_plan`; this class holds the
    result and its inputs, checks itself (quota, capacity, thresholds and the
    rounded cost are validated on construction; a file without a valid hash
    is refused), serialises to JSON without loss, prints as a table and draws
    as a heat map.

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
        lp (LPSolution): The LP optimum and its certified bound.
        rounded_cost (float): The LP objective of the rounded plan.
        thresholds (np.ndarray, optional): (K, M) int64 routing thresholds;
            defaults to the quantiles of the quota rows.
        id_digests (Sequence[dict | None], optional): Per dataset, the
            training images the thresholds were cut at (``images``: how
            many, ``sha256``: digest of their sorted buckets), or None where
            they are quantiles. Defaults to None for every dataset.
        similarity_spec (dict, optional): How S was made (``sources``
            weights, ``prior`` groups, or ``matrix``); compared on resume.
        rounding (str): What made levels 1-2 of the plan: ``'heuristic'`` or
            ``'exact'`` (the MILP). Defaults to ``'heuristic'``.
        integral (dict, optional): The MILP certificate, when solved:
            ``status``, ``value`` (the integral optimum), ``bound``,
            ``nodes``.
    """

    def __init__(self, dataset_names: Sequence[str], loads: Sequence[float],
                 images: Sequence[int], similarity: np.ndarray, num_experts: int,
                 capacity_factor: Optional[float], capacity: Optional[int], beta: float,
                 solver: str, quota: np.ndarray, expert_anchor: Sequence[int],
                 lp: LPSolution, rounded_cost: float,
                 thresholds: Optional[np.ndarray] = None,
                 id_digests: Optional[Sequence[Optional[Dict]]] = None,
                 similarity_spec: Optional[Dict] = None,
                 rounding: str = 'heuristic',
                 integral: Optional[Dict] = None) -> None:
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
        if np.any(self.quota < 0):
            d, e = np.argwhere(self.quota < 0)[0]
            raise PlanError(f'quota[{self.dataset_names[d]!r}, e{e}] = {self.quota[d, e]} is '
                            'negative')
        if not np.array_equal(self.quota.sum(1), self.images):
            raise PlanError('quota rows must sum to the images per epoch '
                            f'{self.images.tolist()}; they sum to {self.quota.sum(1).tolist()}')
        if np.any(self.images < 1):
            raise PlanError(f'every dataset needs images; images per epoch are '
                            f'{self.images.tolist()}')
        if self.expert_anchor.shape != (m, ) or np.any(self.expert_anchor < 0) or np.any(
                self.expert_anchor >= k):
            raise PlanError(f'expert_anchor {self.expert_anchor.tolist()} must give one dataset '
                            f'index in [0, {k}) per expert ({m})')
        if self.capacity is not None and self.expert_loads.max() > self.capacity:
            e = int(np.argmax(self.expert_loads))
            raise PlanError(f'expert e{e} is planned {int(self.expert_loads[e])} images per '
                            f'epoch, above the capacity {self.capacity}')
        self.thresholds = (self._quantile_thresholds() if thresholds is None else
                           np.asarray(thresholds, dtype=np.int64))
        bad = self.threshold_errors()
        if bad:
            raise PlanError('the routing thresholds do not fit the quota: ' + '; '.join(bad))
        self.id_digests: List[Optional[Dict]] = (
            [None] * k if id_digests is None else
            [None if v is None else dict(images=int(v['images']), sha256=str(v['sha256']))
             for v in id_digests])
        if len(self.id_digests) != k:
            raise PlanError(f'id_digests has {len(self.id_digests)} entries; expected {k}')
        self.similarity_spec = None if similarity_spec is None else json.loads(
            _canonical(similarity_spec))
        if rounding not in ('heuristic', 'exact'):
            raise PlanError(f"rounding {rounding!r} is not 'heuristic' or 'exact'")
        self.rounding = rounding
        self.integral = None if integral is None else dict(
            status=str(integral['status']), value=_float_or_none(integral.get('value')),
            bound=_float_or_none(integral.get('bound')), nodes=int(integral.get('nodes', 0)))
        recomputed = self.recompute_cost()
        if abs(recomputed - self.rounded_cost) > _COST_RTOL * max(1.0, abs(recomputed)):
            raise PlanError(f'rounded_cost {self.rounded_cost!r} is not the cost of the quota '
                            f'table ({recomputed!r})')
        #: wall seconds of the LP and of the whole plan (not serialised)
        self.timings: Dict[str, float] = {}

    # ----------------------------------------------------------- derived
    @property
    def num_datasets(self) -> int:
        """int: K."""
        return len(self.dataset_names)

    @property
    def lp_bound(self) -> float:
        """float: Certified lower bound of the LP, below every integral plan."""
        return float(self.lp.bound)

    @property
    def integral_optimum(self) -> Optional[float]:
        """float | None: The MILP optimum, when it was solved to optimality."""
        if self.integral is None or self.integral['status'] != 'optimal':
            return None
        return self.integral['value']

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

    def recompute_cost(self) -> float:
        """The LP objective of the quota table, from the plan's inputs.

        Returns:
            float: ``sum cost[d, anchor(e)] * quota[d, e] / images[d]``.
        """
        share = self.quota / self.images[:, None]
        return float((self.cost_matrix[:, self.expert_anchor] * share).sum())

    def _quantile_thresholds(self) -> np.ndarray:
        return np.stack([bucket_thresholds(row) for row in self.quota]).astype(np.int64)

    def threshold_errors(self) -> List[str]:
        """Why the thresholds do not fit the quota (empty when they do).

        See :func:`mmgem.planner.hashing.threshold_errors`.

        Returns:
            list[str]: Problems, naming the dataset.
        """
        return threshold_errors(self.quota, self.thresholds, self.dataset_names)

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

    # ------------------------------------------------------------ routing
    def expert_of(self, dataset: Union[str, int], image_id: ImageId) -> int:
        """The expert of one image: the plan's routing rule.

        The stable bucket of ``(dataset name, image id)`` is looked up in the
        dataset's threshold row; identical on every process, at train and at
        test time, and for ids never seen when planning.

        Args:
            dataset (str | int): Name or index of the image's dataset.
            image_id (int | str): The image's id inside its dataset.

        Returns:
            int: The expert index.
        """
        d = self.dataset_index(dataset)
        return expert_of_bucket(self.thresholds[d],
                                image_bucket(self.dataset_names[d], image_id))

    def route(self, dataset: Union[str, int], image_ids: Sequence[ImageId]) -> np.ndarray:
        """The experts of many images of one dataset.

        Args:
            dataset (str | int): Name or index.
            image_ids (Sequence[int | str]): Image ids.

        Returns:
            np.ndarray: (N,) int64 experts, in the order of ``image_ids``.
        """
        d = self.dataset_index(dataset)
        return experts_of_buckets(self.thresholds[d],
                                  image_buckets(self.dataset_names[d], list(image_ids)))

    def realised_counts(self, image_ids: Mapping[str, Sequence[ImageId]]) -> np.ndarray:
        """How many of the given images the rule sends to every expert.

        Args:
            image_ids (Mapping[str, Sequence[int | str]]): Image ids per
                dataset name (datasets not given count 0).

        Returns:
            np.ndarray: (K, M) int64 counts; equal to the quota for the
            training images the thresholds were cut at.
        """
        out = np.zeros_like(self.quota)
        for name, ids in image_ids.items():
            d = self.dataset_index(name)
            out[d] = np.bincount(self.route(d, ids), minlength=self.num_experts)
        return out

    def with_image_ids(self, image_ids: Mapping[str, Sequence[ImageId]]) -> 'GEMPlan':
        """A copy whose thresholds are cut at these training images.

        Args:
            image_ids (Mapping[str, Sequence[int | str]]): Training image ids
                per dataset name; datasets not given keep their thresholds.

        Returns:
            GEMPlan: The plan with exact quotas for these images (a new
            hash).
        """
        thresholds = self.thresholds.copy()
        digests = list(self.id_digests)
        for name, ids in image_ids.items():
            d = self.dataset_index(name)
            buckets = image_buckets(name, list(ids))
            thresholds[d] = bucket_thresholds(self.quota[d], buckets)
            digests[d] = image_id_digest(buckets)
        data = self._payload()
        data.update(thresholds=thresholds.tolist(), id_digests=digests)
        return GEMPlan.from_dict(data, source='plan', force=True, _quiet=True)

    # ------------------------------------------------------------ checks
    def mismatches(self, **current: Any) -> List[str]:
        """Fields of the plan that differ from the current config and data.

        Args:
            **current: Any of ``dataset_names``, ``images`` (images per epoch
                of each dataset), ``num_experts``, ``capacity_factor``,
                ``beta``, ``similarity_spec`` and ``id_digests`` (None entries
                are not compared).

        Returns:
            list[str]: One line per differing field, naming plan and current
            values; empty when the plan fits.
        """
        unknown = set(current) - {'dataset_names', 'images', 'num_experts', 'capacity_factor',
                                  'beta', 'similarity_spec', 'id_digests'}
        if unknown:
            raise TypeError(f'mismatches() got unknown fields {sorted(unknown)}')
        out = []
        names = list(self.dataset_names)
        if 'dataset_names' in current and list(current['dataset_names']) != names:
            out.append(f'datasets: the plan has {names}, now {list(current["dataset_names"])}')
            return out  # the per-dataset fields below are not comparable
        if 'images' in current:
            now = np.asarray(current['images'], dtype=np.int64)
            diff = [f'{n} {int(a)} -> {int(b)}' for n, a, b in zip(names, self.images, now)
                    if a != b]
            if diff:
                out.append('loads (images per epoch): ' + ', '.join(diff))
        if 'num_experts' in current and int(current['num_experts']) != self.num_experts:
            out.append(f'num_experts: the plan has {self.num_experts}, now '
                       f'{current["num_experts"]}')
        if 'capacity_factor' in current:
            now = current['capacity_factor']
            now = None if now is None else float(now)
            if now != self.capacity_factor:
                out.append(f'capacity_factor: the plan has {self.capacity_factor}, now {now}')
        if 'beta' in current and float(current['beta']) != self.beta:
            out.append(f'beta: the plan has {self.beta}, now {float(current["beta"])}')
        if 'similarity_spec' in current:
            now = current['similarity_spec']
            now = None if now is None else json.loads(_canonical(now))
            if now != self.similarity_spec:
                out.append(f'similarity: the plan was made with {self.similarity_spec}, now '
                           f'{now}')
        if 'id_digests' in current:
            diff = []
            for n, a, b in zip(names, self.id_digests, current['id_digests']):
                if b is None or a == b:
                    continue
                if a is None:
                    diff.append(f'{n} (the plan was cut at no image ids)')
                else:
                    diff.append(f'{n} ({a["images"]} images -> {b["images"]}'
                                + (', other ids' if a['images'] == b['images'] else '') + ')')
            if diff:
                out.append('training image ids: ' + ', '.join(diff))
        return out

    # ----------------------------------------------------- serialisation
    def _payload(self) -> Dict[str, Any]:
        return dict(
            format=PLAN_FORMAT,
            version=PLAN_VERSION,
            dataset_names=list(self.dataset_names),
            loads=[float(v) for v in self.loads],
            images=[int(v) for v in self.images],
            similarity=[[float(v) for v in row] for row in self.similarity],
            similarity_spec=self.similarity_spec,
            num_experts=self.num_experts,
            capacity_factor=self.capacity_factor,
            capacity=self.capacity,
            beta=self.beta,
            solver=self.solver,
            quota=[[int(v) for v in row] for row in self.quota],
            thresholds=[[int(v) for v in row] for row in self.thresholds],
            id_digests=[None if v is None else dict(v) for v in self.id_digests],
            expert_anchor=[int(v) for v in self.expert_anchor],
            lp=self.lp.to_dict(),
            rounded_cost=self.rounded_cost,
            rounding=self.rounding,
            integral=None if self.integral is None else dict(self.integral))

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
    def from_dict(cls, data: Dict[str, Any], source: str = 'plan dict',
                  force: bool = False, _quiet: bool = False) -> 'GEMPlan':
        """Rebuild a plan written by :meth:`to_dict`.

        A plan must carry the hash of its content: one without a hash, or
        whose content no longer hashes to it, is refused. ``force=True``
        accepts a deliberately edited plan after re-validating it: the quota
        must still cover every image and respect the capacity (recomputed
        from ``capacity_factor``), the rounded cost is recomputed from the
        quota, and thresholds that no longer fit the quota are replaced by
        its quantiles (their image-id digests dropped). The result hashes to
        its new content.

        Args:
            data (dict): The dict.
            source (str): What the dict came from, for error messages.
            force (bool): Accept a missing or stale hash after re-validation.
                Defaults to False.

        Returns:
            GEMPlan: The plan.
        """
        if not isinstance(data, dict) or data.get('format') != PLAN_FORMAT:
            raise PlanError(f'{source} is not a GEM plan (format '
                            f'{data.get("format") if isinstance(data, dict) else None!r})')
        if data.get('version') != PLAN_VERSION:
            raise PlanError(f'{source} has plan version {data.get("version")!r}; this mmgem '
                            f'reads version {PLAN_VERSION}: make the plan again')
        if 'hash' not in data and not force:
            raise PlanError(f'{source} has no hash: a plan must carry the hash of its content, '
                            'so an edited or hand-written plan is refused. To use a plan '
                            'edited on purpose, load it with force=True (GEMPlannerHook('
                            'force_plan=True)), which re-validates its capacity and cost.')
        check_plan_fields(data, source, allow_missing_hash=force)
        notes = []
        try:
            k = len(data['dataset_names'])
            m = data['num_experts']
            quota = np.asarray(data['quota'], dtype=np.int64).reshape(k, m)
            images = data['images']
            capacity = data['capacity']
            thresholds = np.asarray(data['thresholds'], dtype=np.int64).reshape(k, m)
            digests = data['id_digests']
            rounded = data['rounded_cost']
            if force:
                from .planner import plan_capacity
                want = plan_capacity(data['capacity_factor'], np.asarray(images, np.int64), m)
                if want != capacity:
                    notes.append(f'capacity {capacity} -> {want}')
                    capacity = want
            kwargs = dict(
                dataset_names=data['dataset_names'], loads=data['loads'], images=images,
                similarity=np.asarray(data['similarity'], dtype=np.float64).reshape(k, k),
                num_experts=m, capacity_factor=data['capacity_factor'],
                capacity=capacity, beta=data['beta'], solver=data['solver'],
                quota=quota, expert_anchor=data['expert_anchor'],
                lp=LPSolution.from_dict(data['lp']), rounded_cost=rounded,
                thresholds=thresholds, id_digests=digests,
                similarity_spec=data['similarity_spec'], rounding=data['rounding'],
                integral=data['integral'])
            if force:
                if threshold_errors(quota, thresholds, data['dataset_names']):
                    kwargs['thresholds'] = None
                    kwargs['id_digests'] = None
                    notes.append('thresholds re-derived from the quota (quantiles)')
                weights = dataset_weights(images, data['beta'])
                cost = weights[:, None] * (1.0 - kwargs['similarity'])
                anchors = np.asarray(data['expert_anchor'], dtype=np.int64)
                share = quota / np.asarray(images, dtype=np.float64)[:, None]
                fresh = float((cost[:, anchors] * share).sum())
                if fresh != rounded:
                    notes.append(f'rounded cost {rounded!r} -> {fresh!r}')
                kwargs['rounded_cost'] = fresh
            plan = cls(**kwargs)
        except KeyError as err:
            raise PlanError(f'{source} misses the field {err.args[0]!r}') from err
        except (TypeError, ValueError, IndexError, OverflowError) as err:
            if isinstance(err, PlanError):
                raise PlanError(f'{source}: {err}') from err
            raise PlanError(f'{source} is malformed: {err}') from err
        if 'hash' in data and data['hash'] != plan.hash and not force:
            raise PlanError(f'{source} hash mismatch: stored {data["hash"]}, content hashes to '
                            f'{plan.hash}; the plan was edited or corrupted (load it with '
                            'force=True to use a deliberate edit after re-validation)')
        if force and not _quiet and data.get('hash') != plan.hash:
            warnings.warn(f'{source}: accepted a plan without a valid hash (force=True) after '
                          're-validating quota, capacity and cost'
                          + (': ' + '; '.join(notes) if notes else '')
                          + f'; its new hash is {plan.hash[:12]}', stacklevel=2)
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
                    and all(isinstance(r, (list, dict)) for r in value)):
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
    def from_json(cls, text: str, source: str = 'plan JSON', force: bool = False) -> 'GEMPlan':
        """Parse :meth:`to_json` output (hostile text is refused, see
        :mod:`.plan_schema`).

        Args:
            text (str): The JSON text.
            source (str): What the text came from, for error messages.
            force (bool): See :meth:`from_dict`. Defaults to False.

        Returns:
            GEMPlan: The plan.
        """
        data = parse_plan_json(text, source)
        return cls.from_dict(data, source=source, force=force)

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
    def load(cls, path: str, force: bool = False) -> 'GEMPlan':
        """Read a plan written by :meth:`save` (a file larger than
        :data:`~.plan_schema.MAX_PLAN_BYTES` is refused before reading).

        Args:
            path (str): The JSON file.
            force (bool): See :meth:`from_dict`. Defaults to False.

        Returns:
            GEMPlan: The plan.
        """
        return cls.from_json(read_plan_file(path), source=f'plan file {path!r}', force=force)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GEMPlan) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.hash)

    # ------------------------------------------------------------ display
    def cost_lines(self) -> List[str]:
        """The certificate of the plan: LP bound, integral optimum, rounded.

        Returns:
            list[str]: Text lines.
        """
        bound, cost = self.lp_bound, self.rounded_cost

        def rel(value: float) -> str:
            return f'{cost / value:.4f}x' if value > 1e-12 else f'{cost - value:+.2e} abs'

        lines = [f'LP bound (certified) {bound:.6f}   rounded cost {cost:.6f} ({rel(bound)} the '
                 f'bound)   rounding: {self.rounding}']
        opt = self.integral_optimum
        if opt is not None:
            lines.append(f'integral optimum (MILP) {opt:.6f}   rounded / optimum {rel(opt)}')
        elif self.integral is not None:
            lines.append(f'integral optimum: MILP stopped ({self.integral["status"]}), '
                         f'bound {self.integral["bound"]}')
        else:
            lines.append('integral optimum: not computed')
        exact = sum(v is not None for v in self.id_digests)
        lines.append(f'routing: thresholds cut at the training images of {exact} of '
                     f'{self.num_datasets} datasets (exact quotas), quantiles elsewhere')
        return lines

    def summary(self) -> str:
        """One paragraph of the plan's key numbers.

        Returns:
            str: Text.
        """
        cap = 'off' if self.capacity is None else (
            f'{self.capacity} images/expert (factor {self.capacity_factor:g})')
        return (f'GEM plan {self.hash[:12]}: K={self.num_datasets} datasets, '
                f'M={self.num_experts} experts, N={int(self.images.sum())} images/epoch, '
                f'capacity {cap}, beta={self.beta:g}, solver {self.solver}, '
                f'max expert load {int(self.expert_loads.max())}')

    def table(self, max_experts: int = 16) -> str:
        """Datasets x experts table of the quota, with the cost certificate.

        Args:
            max_experts (int): Above this many experts each dataset lists its
                experts instead of a full row. Defaults to 16.

        Returns:
            str: Text table with expert loads, capacity, per-dataset cost, LP
            bound, integral optimum (where computed) and rounded cost.
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
        return '\n'.join(lines + self.cost_lines())

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


def image_id_digest(buckets: np.ndarray) -> Dict[str, Any]:
    """Fingerprint of a dataset's training images (the plan stores it).

    Args:
        buckets (np.ndarray): Buckets of the images (any order).

    Returns:
        dict: ``images`` (how many) and ``sha256`` (hex digest of the sorted
        buckets as little-endian int64).
    """
    b = np.sort(np.asarray(buckets, dtype=np.int64).reshape(-1), kind='stable')
    return dict(images=int(b.size), sha256=hashlib.sha256(b.astype('<i8').tobytes()).hexdigest())


def _float_or_none(value: Any) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


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
