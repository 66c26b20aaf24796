# Copyright (c) mmgem contributors. All rights reserved.
"""PlanningConfig: the checked settings of one GEM planning."""
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from mmgem.planner import PlanError, check_similarity
from mmgem.planner.compiler import ROUNDINGS
from mmgem.planner.lp import check_solver_name, installed_solvers
from mmgem.planner.similarity import SIMILARITY_SOURCES

#: what a restored or given plan that does not fit the data does
ON_MISMATCH = ('error', 'replan')


def _bad(setting: str, why: str) -> ValueError:
    return ValueError(f'GEMPlannerHook({setting}): {why}')


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer,
                                                              np.floating))


def _check_counts(num_experts, num_probe_images) -> None:
    if num_experts is not None and (isinstance(num_experts, bool) or not isinstance(
            num_experts, (int, np.integer)) or num_experts < 1):
        raise _bad(f'num_experts={num_experts!r}',
                   "must be an integer >= 1 or None (the model's)")
    if isinstance(num_probe_images, bool) or not isinstance(num_probe_images, int) or \
            num_probe_images < 1:
        raise _bad(f'num_probe_images={num_probe_images!r}', 'must be an integer >= 1')


def _check_objective(capacity_factor, beta) -> None:
    if capacity_factor is not None and (not _is_number(capacity_factor) or not math.isfinite(
            capacity_factor) or capacity_factor < 1):
        raise _bad(f'capacity_factor={capacity_factor!r}',
                   'must be a finite number >= 1, or None for no capacity limit')
    if not _is_number(beta) or not 0 <= beta <= 1:
        raise _bad(f'beta={beta!r}', 'must be a number in [0, 1]')


def _check_sources(sources: Dict[str, Any], prior: Any) -> None:
    if not sources:
        raise _bad('similarity', "needs 'sources' (a dict of weights) or a 'matrix'")
    unknown = set(sources) - set(SIMILARITY_SOURCES)
    if unknown:
        raise _bad(f'similarity.sources={sources!r}',
                   f'unknown sources {sorted(unknown)}; expected {list(SIMILARITY_SOURCES)}')
    for key, weight in sources.items():
        if not _is_number(weight) or not math.isfinite(weight) or weight < 0:
            raise _bad(f'similarity.sources.{key}={weight!r}',
                       'a weight must be a finite number >= 0')
    if sum(sources.values()) <= 0:
        raise _bad(f'similarity.sources={sources!r}', 'the weights sum to 0')
    if 'prior' in sources and (not prior or isinstance(prior, str) or not all(
            isinstance(g, (list, tuple)) and all(isinstance(n, str) for n in g)
            for g in prior)):
        raise _bad(f'similarity.prior={prior!r}',
                   "the 'prior' source needs a list of groups (lists) of dataset names")


def _check_similarity(similarity: Dict[str, Any]) -> None:
    unknown = set(similarity) - {'sources', 'prior', 'matrix'}
    if unknown:
        raise _bad(f'similarity={similarity!r}', f'unknown keys {sorted(unknown)}; expected '
                   "'sources', 'prior' or 'matrix'")
    if similarity.get('matrix') is None:
        _check_sources(dict(similarity.get('sources') or {}), similarity.get('prior'))
        return
    try:
        matrix = np.asarray(similarity['matrix'], dtype=np.float64)
        check_similarity(matrix, matrix.shape[0] if matrix.ndim else 0)
    except (PlanError, ValueError, TypeError) as err:
        raise _bad('similarity.matrix', str(err)) from err


def _check_solving(solver, fallback_solvers, rounding) -> None:
    try:
        check_solver_name(solver)
        for name in fallback_solvers or []:
            check_solver_name(name)
    except PlanError as err:
        raise _bad(f'solver={solver!r}, fallback_solvers={fallback_solvers!r}',
                   str(err)) from err
    if not fallback_solvers and solver.upper() not in installed_solvers():
        raise _bad(f'solver={solver!r}', f'not installed (installed: {installed_solvers()}); '
                   'pick another or give fallback_solvers')
    if rounding not in ROUNDINGS:
        raise _bad(f'rounding={rounding!r}', f'must be one of {list(ROUNDINGS)}')


@dataclass(frozen=True)
class PlanningConfig:
    """How to make a GEM plan; checked when built, naming the setting at fault.

    Args:
        num_experts (int, optional): Experts per MoE layer; None takes the
            model's. Defaults to None.
        capacity_factor (float, optional): Expert capacity is
            ``capacity_factor * N / M`` images per epoch; None disables the
            limit. Defaults to 1.25.
        beta (float): Fairness exponent of the dataset weights ``n_d ** beta``
            in [0, 1]. Defaults to 0.
        similarity (dict, optional): ``sources`` (weights of ``'prior'``,
            ``'labels'``, ``'features'``) and ``prior`` (groups of dataset
            names), or ``matrix`` (K x K, used as ``S``). Defaults to
            ``dict(sources=dict(labels=1.0))``.
        num_probe_images (int): Images per dataset probed for the
            ``features`` source. Defaults to 8.
        solver (str): CVXPY LP solver. Defaults to ``'ECOS'``.
        fallback_solvers (Sequence[str], optional): Tried in order if
            ``solver`` is not installed. Defaults to None.
        rounding (str): ``'auto'``, ``'heuristic'`` or ``'exact'``.
            Defaults to ``'auto'``.
        on_mismatch (str): ``'error'`` or ``'replan'``: what a restored or
            given plan that does not fit the data does. Defaults to
            ``'error'``.
    """

    num_experts: Optional[int] = None
    capacity_factor: Optional[float] = 1.25
    beta: float = 0.0
    similarity: Optional[Dict[str, Any]] = None
    num_probe_images: int = 8
    solver: str = 'ECOS'
    fallback_solvers: Optional[Sequence[str]] = None
    rounding: str = 'auto'
    on_mismatch: str = 'error'
    _sources: Dict[str, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        similarity = dict(sources=dict(labels=1.0)) if self.similarity is None else dict(
            self.similarity)
        _check_counts(self.num_experts, self.num_probe_images)
        _check_objective(self.capacity_factor, self.beta)
        _check_similarity(similarity)
        _check_solving(self.solver, self.fallback_solvers, self.rounding)
        if self.on_mismatch not in ON_MISMATCH:
            raise _bad(f'on_mismatch={self.on_mismatch!r}', f'must be one of {list(ON_MISMATCH)}')
        sources = {} if similarity.get('matrix') is not None else {
            k: float(v) for k, v in dict(similarity.get('sources') or {}).items()}
        object.__setattr__(self, 'similarity', similarity)
        object.__setattr__(self, '_sources', sources)
        for key, cast in (('num_experts', int), ('capacity_factor', float)):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, cast(getattr(self, key)))
        object.__setattr__(self, 'beta', float(self.beta))

    @property
    def sources(self) -> Dict[str, float]:
        """dict[str, float]: Source weights (empty with a ``matrix``)."""
        return dict(self._sources)

    @property
    def matrix(self) -> Optional[np.ndarray]:
        """np.ndarray | None: The given similarity matrix, if any."""
        matrix = self.similarity.get('matrix')
        return None if matrix is None else np.asarray(matrix, dtype=np.float64)

    @property
    def prior(self) -> Optional[List[List[str]]]:
        """list[list[str]] | None: The prior groups, when the prior is a source."""
        prior = self.similarity.get('prior') if 'prior' in self._sources else None
        return None if prior is None else [list(g) for g in prior]

    def similarity_spec(self) -> Dict[str, Any]:
        """How ``S`` is built (recorded in the plan, compared on resume).

        Returns:
            dict: ``{'matrix': [[...]]}`` or ``{'sources': {...}, 'prior': ...}``.
        """
        if self.matrix is not None:
            return dict(matrix=self.matrix.tolist())
        return dict(sources=dict(sorted(self._sources.items())), prior=self.prior)
