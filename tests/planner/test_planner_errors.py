# Copyright (c) mmgem contributors. All rights reserved.
"""Bad input, missing and failing solvers: clear errors naming the value."""
import ast
from pathlib import Path

import cvxpy
import numpy as np
import pytest

from mmgem.planner import (
    PlanError,
    SolverFailedError,
    SolverUnavailableError,
    installed_solvers,
    make_plan,
)

NAMES = ['a', 'b', 'c', 'd']
LOADS = [100, 200, 300, 400]
S = np.eye(4)
PLANNER_DIR = Path(__file__).resolve().parents[2] / 'mmgem' / 'planner'


@pytest.mark.parametrize('kwargs, match', [
    (dict(capacity_factor=0.8, num_experts=8),
     r'capacity_factor=0\.8 < 1: the M=8 experts cannot hold N=1000 images '
     r'\(capacity 100\.0 each\)'),
    (dict(capacity_factor=float('nan')), 'capacity_factor=nan must be finite'),
    (dict(num_experts=0), 'num_experts=0 < 1'),
    (dict(num_experts=2.5), r'num_experts=2\.5 must be an integer'),
    (dict(loads=[100, -5, 300, 400]), r"load of dataset 'b' is negative \(-5\.0\)"),
    (dict(loads=[0, 0, 0, 0]), 'all loads are zero'),
    (dict(loads=[100, 0, 300, 400]), r"dataset 'b' has zero images per epoch \(load 0\.0\)"),
    (dict(loads=[100, 0.4, 300, 400]), r"dataset 'b' has zero images per epoch \(load 0\.4\)"),
    (dict(loads=[100, float('inf'), 300, 400]), "load of dataset 'b' is inf"),
    (dict(loads=[1, 2, 3]), r'loads has shape \(3,\); expected one load per dataset \(4\)'),
    (dict(similarity=np.ones((4, 3))), r'square matrix; got shape \(4, 3\)'),
    (dict(similarity=np.eye(3)), 'is 3 x 3 but there are 4 datasets'),
    (dict(similarity=np.eye(4) * 2), r'similarity\[0, 0\]=2\.0 is outside \[0, 1\]'),
    (dict(similarity=np.where(np.eye(4) > 0, 1.0, np.nan)), r'similarity\[0, 1\] is nan'),
    (dict(beta=1.5), r'beta=1\.5 is outside \[0, 1\]'),
    (dict(dataset_names=['a', 'b', 'a', 'd']), r"repeated: \['a'\]"),
    (dict(dataset_names=[], loads=[], similarity=np.zeros((0, 0))), 'dataset_names is empty'),
    (dict(solver='FOO'), r"unknown solver 'FOO': CVXPY knows"),
    (dict(fallback_solvers=['ECOS', 'BAR']), r"unknown solver 'BAR'"),
])
def test_bad_input_names_the_value(kwargs, match):
    args = dict(dataset_names=NAMES, loads=LOADS, similarity=S, num_experts=2)
    args.update(kwargs)
    with pytest.raises(PlanError, match=match):
        make_plan(**args)


def missing_solver():
    missing = [s for s in cvxpy.settings.SOLVERS if s not in installed_solvers()]
    if not missing:
        pytest.skip('every solver CVXPY knows is installed')
    return missing[0]


def test_missing_solver_fails_without_a_fallback_list():
    name = missing_solver()
    with pytest.raises(SolverUnavailableError,
                       match=f"solver '{name}' is not installed.*fallback_solvers"):
        make_plan(NAMES, LOADS, S, 2, solver=name)


def test_missing_solver_falls_back_when_asked():
    name = missing_solver()
    with pytest.warns(UserWarning, match=f"fell back to solver 'ECOS' after: {name}: not "
                      'installed'):
        plan = make_plan(NAMES, LOADS, S, 2, solver=name, fallback_solvers=['ECOS'])
    assert plan.solver == 'ECOS'


def test_solver_failure_is_an_error_or_falls_back():
    fail = dict(solver='ECOS', solver_options=dict(max_iters=1))
    with pytest.raises(SolverFailedError, match="solver 'ECOS' returned status 'user_limit'"):
        make_plan(NAMES, LOADS, S, 2, **fail)
    other = next(s for s in ('CLARABEL', 'HIGHS', 'SCIPY') if s in installed_solvers())
    # solver_options belong to the first solver; the fallback runs with defaults
    with pytest.warns(UserWarning, match=f"fell back to solver '{other}' after: ECOS: "):
        plan = make_plan(NAMES, LOADS, S, 2, **fail, fallback_solvers=[other])
    assert plan.solver == other


def test_planner_never_imports_torch_or_openmmlab():
    banned = {'torch', 'mmdet', 'mmengine', 'mmcv'}
    files = sorted(PLANNER_DIR.glob('*.py'))
    assert len(files) >= 8
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module or '']
            else:
                continue
            for mod in mods:
                assert mod.split('.')[0] not in banned, f'{path.name} imports {mod}'
