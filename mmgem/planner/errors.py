# Copyright (c) mmgem contributors. All rights reserved.
"""The error raised for a GEM plan that cannot be made or read."""


class PlanError(ValueError):
    """Bad planner input, an unsolvable instance or a corrupt plan file.

    It subclasses :class:`ValueError`, so code that guards against bad values
    catches it too. The message always names the value at fault.
    """


class SolverUnavailableError(PlanError):
    """The LP solver asked for is known to CVXPY but is not installed."""


class SolverFailedError(PlanError):
    """The LP solver ran but returned no usable optimal solution."""
