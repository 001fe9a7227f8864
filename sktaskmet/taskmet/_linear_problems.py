r"""Linear decision tasks: a general (mixed-integer) linear program, PyEPO's shortest path and
knapsack, and an adapter for any PyEPO optimisation model."""

import numbers

import numpy as np
import torch

from ._linear_tasks import LinearDecisionTask
from ._lp_solvers import (
    grid_arcs,
    integer_scale,
    knapsack_solver,
    solve_grid_shortest_path,
    solve_milp_batch,
)

__all__ = ["LinearProgram", "ShortestPath", "Knapsack", "PyEPOTask"]

_SURROGATE_DOC = """
    surrogate : {"spo+", "pfyl", "dpo", "dpo-regret", "dbb", "nce", "mse"} or dict, \
            default="spo+"
        Training surrogate: SPO+, perturbed Fenchel-Young, differentiable perturbed
        optimiser (with a squared loss to the true solution, or ``"dpo-regret"``: with
        the regret of its mean perturbed decision), differentiable black-box solver (with
        the absolute regret), noise-contrastive estimation against a solution pool, or
        the squared error of the costs (two-stage learning). A dict of these names to
        positive weights, e.g. ``{"pfyl": 0.8, "spo+": 0.2}``, trains on the weighted sum
        of their losses. See :ref:`linear_decision_tasks`.
    n_samples : int, default=10
        Perturbations per instance (PFYL, DPO, DPO regret).
    sigma : float, default=1.0
        Standard deviation of the Gaussian perturbations (PFYL, DPO, DPO regret).
    dbb_lambda : float, default=10.0
        Interpolation step of DBB.
    solve_ratio : float in (0, 1], default=1.0
        Probability that a surrogate's solve is exact; otherwise the best solution of a
        pool seeded with the training solutions is used (PyEPO's ``solve_ratio``). For
        NCE: the probability of adding the predicted costs' solutions to the pool.
    random_state : int, RandomState or None, default=0
        Seed of the perturbations and pool draws within one fit."""


def _dense(matrix, name):
    if matrix is None:
        return None
    array = np.asarray(matrix, dtype=np.float64)
    if array.ndim != 2 or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be a finite 2-d array; got shape {array.shape}.")
    return array


class _SurrogateParams:
    """Stores the surrogate parameters shared by every linear task."""

    def _set_surrogate(self, surrogate, n_samples, sigma, dbb_lambda, solve_ratio, random_state):
        self.surrogate = surrogate
        self.n_samples = n_samples
        self.sigma = sigma
        self.dbb_lambda = dbb_lambda
        self.solve_ratio = solve_ratio
        self.random_state = random_state


class LinearProgram(_SurrogateParams, LinearDecisionTask):
    r"""Decision by a linear or mixed-integer program solved with scipy's HiGHS.

    .. math::
        w^\star(c) = \arg\min_w\ s\,c^\top w \quad \text{s.t.}\quad A_{ub} w \le b_{ub},\
        A_{eq} w = b_{eq},\ l \le w \le u,\ w_j \in \mathbb{Z} \text{ where integrality}_j = 1,

    with :math:`s = 1` for ``sense="min"`` and :math:`s = -1` for ``sense="max"``. An
    instance is one cost vector :math:`c` (a row of ``y``). Instances are solved one by
    one with :func:`scipy.optimize.linprog`, over ``n_jobs`` joblib workers.

    Parameters
    ----------
    A_ub, b_ub, A_eq, b_eq : array-like or None, default=None
        Constraints, as :func:`scipy.optimize.linprog` takes them.
    bounds : tuple or sequence of tuples, default=(0, None)
        Bounds of the variables.
    integrality : array-like of int or None, default=None
        1 for integer variables, 0 for continuous ones (None: all continuous).
    sense : {"min", "max"}, default="min"
    n_jobs : int or None, default=None
        joblib workers for batch solving.
    %s

    Raises
    ------
    ValueError
        When a cost vector makes the program infeasible or unbounded (named in the error).

    Examples
    --------
    >>> import torch
    >>> from sktaskmet.tasks import LinearProgram
    >>> task = LinearProgram(A_eq=[[1, 1, 1]], b_eq=[1], bounds=(0, 1))  # pick one of three
    >>> task.decide(torch.tensor([[[3.0, 1.0, 2.0]]], dtype=torch.float64))
    tensor([[0., 1., 0.]], dtype=torch.float64)
    """

    def __init__(
        self,
        A_ub=None,
        b_ub=None,
        A_eq=None,
        b_eq=None,
        bounds=(0, None),
        integrality=None,
        sense="min",
        n_jobs=None,
        surrogate="spo+",
        n_samples=10,
        sigma=1.0,
        dbb_lambda=10.0,
        solve_ratio=1.0,
        random_state=0,
    ):
        self.A_ub = A_ub
        self.b_ub = b_ub
        self.A_eq = A_eq
        self.b_eq = b_eq
        self.bounds = bounds
        self.integrality = integrality
        self.sense = sense
        self.n_jobs = n_jobs
        self._set_surrogate(surrogate, n_samples, sigma, dbb_lambda, solve_ratio, random_state)

    @property
    def _sign(self):
        if self.sense not in ("min", "max"):
            raise ValueError(f"sense must be 'min' or 'max'; got {self.sense!r}.")
        return 1 if self.sense == "min" else -1

    @property
    def n_costs(self):
        for matrix in (self.A_ub, self.A_eq):
            if matrix is not None:
                return int(np.shape(matrix)[1])
        if self.bounds is not None and np.ndim(self.bounds) == 2:
            return len(self.bounds)
        raise ValueError(
            "LinearProgram needs A_ub or A_eq (or one bound per variable) to know the number "
            "of variables."
        )

    def _program(self):
        program = {
            "A_ub": _dense(self.A_ub, "A_ub"),
            "b_ub": None if self.b_ub is None else np.ravel(self.b_ub).astype(float),
            "A_eq": _dense(self.A_eq, "A_eq"),
            "b_eq": None if self.b_eq is None else np.ravel(self.b_eq).astype(float),
            "bounds": self.bounds,
            "integrality": None if self.integrality is None else np.ravel(self.integrality),
        }
        for matrix, rhs in (("A_ub", "b_ub"), ("A_eq", "b_eq")):
            if (program[matrix] is None) != (program[rhs] is None):
                raise ValueError(f"LinearProgram: {matrix} and {rhs} go together.")
            if program[matrix] is not None and len(program[rhs]) != len(program[matrix]):
                raise ValueError(
                    f"LinearProgram: {rhs} has {len(program[rhs])} entries for the "
                    f"{len(program[matrix])} rows of {matrix}."
                )
        return program

    def _solve_exact(self, costs):
        return self._exact_solver()(costs)

    def _exact_solver(self):
        sign, program, n_jobs = self._sign, self._program(), self.n_jobs

        def solve(costs):
            array = costs.detach().cpu().numpy()
            solutions = solve_milp_batch(array, program, sense=sign, n_jobs=n_jobs)
            return torch.as_tensor(solutions).to(device=costs.device, dtype=costs.dtype)

        return solve


LinearProgram.__doc__ = LinearProgram.__doc__ % _SURROGATE_DOC


class ShortestPath(_SurrogateParams, LinearDecisionTask):
    r"""PyEPO's shortest path on a grid, solved by batched dynamic programming in torch.

    The network is the ``(h, w)`` grid with arcs pointing east and south (PyEPO's
    ``shortestPathModel``; ``(5, 5)`` has 40 arcs). The decision is the cheapest path
    from the north-west to the south-east corner, a minimisation:
    :math:`w^\star(c) = \arg\min_{w \in W} c^\top w` with :math:`W` the 0/1 arc
    indicators of such paths. The graph is acyclic, so a whole batch of cost vectors is
    solved at once by :func:`~sktaskmet.taskmet._lp_solvers.solve_grid_shortest_path`, on
    the device of the costs. The arcs are ordered as PyEPO orders them
    (:attr:`arcs`), so cost vectors and solutions are interchangeable with PyEPO's.

    Parameters
    ----------
    grid : tuple of int, default=(5, 5)
    %s

    Attributes
    ----------
    arcs : list of (tail, head)

    Examples
    --------
    >>> import torch
    >>> from sktaskmet.tasks import ShortestPath
    >>> task = ShortestPath(grid=(2, 2))  # arcs 0->1, 0->2, 1->3, 2->3
    >>> task.decide(torch.tensor([[[1.0, 2.0, 5.0, 1.0]]]))
    tensor([[0., 1., 0., 1.]])
    """

    _sign = 1

    def __init__(
        self,
        grid=(5, 5),
        surrogate="spo+",
        n_samples=10,
        sigma=1.0,
        dbb_lambda=10.0,
        solve_ratio=1.0,
        random_state=0,
    ):
        self.grid = grid
        self._set_surrogate(surrogate, n_samples, sigma, dbb_lambda, solve_ratio, random_state)

    def _grid(self):
        grid = (
            tuple(np.ravel(self.grid).tolist()) if not isinstance(self.grid, tuple) else self.grid
        )
        if (
            len(grid) != 2
            or not all(isinstance(g, numbers.Integral) and not isinstance(g, bool) for g in grid)
            or min(grid) < 1
            or grid[0] * grid[1] < 2
        ):
            raise ValueError(f"grid must be two positive integers (h, w); got {self.grid!r}.")
        return int(grid[0]), int(grid[1])

    @property
    def arcs(self):
        return grid_arcs(self._grid())

    @property
    def n_costs(self):
        h, w = self._grid()
        return (h - 1) * w + (w - 1) * h

    def _solve_exact(self, costs):
        return solve_grid_shortest_path(costs.detach(), self._grid())

    def _exact_solver(self):
        grid = self._grid()
        # the solver runs without a graph and only reads the costs: no detach needed
        return lambda costs: solve_grid_shortest_path(costs, grid)


ShortestPath.__doc__ = ShortestPath.__doc__ % _SURROGATE_DOC


class Knapsack(_SurrogateParams, LinearDecisionTask):
    r"""PyEPO's (multi-dimensional) 0-1 knapsack: a maximisation.

    .. math::
        w^\star(c) = \arg\max_{w \in \{0, 1\}^m} c^\top w \quad \text{s.t.}\quad
        A w \le b,

    with item values :math:`c` (the predicted costs), weights :math:`A` (``dim`` x m)
    and capacities :math:`b`. With one capacity and weights that are integers after
    scaling by a power of ten (PyEPO's have two decimals), the whole batch is solved
    exactly in torch: by meeting in the middle when each half of the items has few
    subsets that fit (:func:`~sktaskmet.taskmet._lp_solvers.solve_knapsack_split`),
    otherwise by dynamic programming over capacities
    (:func:`~sktaskmet.taskmet._lp_solvers.solve_knapsack_dp`); otherwise each instance
    is solved as a MILP with scipy's HiGHS. Regret is :math:`z^\star(c) - c^\top
    w^\star(\hat c)`.

    Parameters
    ----------
    weights : array-like of shape (n_items,) or (dim, n_items)
        Non-negative item weights.
    capacities : float or array-like of shape (dim,)
    %s
    """

    _sign = -1

    def __init__(
        self,
        weights,
        capacities,
        surrogate="spo+",
        n_samples=10,
        sigma=1.0,
        dbb_lambda=10.0,
        solve_ratio=1.0,
        random_state=0,
    ):
        self.weights = weights
        self.capacities = capacities
        self._set_surrogate(surrogate, n_samples, sigma, dbb_lambda, solve_ratio, random_state)

    def _problem(self):
        weights = np.atleast_2d(np.asarray(self.weights, dtype=np.float64))
        capacities = np.ravel(np.asarray(self.capacities, dtype=np.float64))
        if weights.ndim != 2 or weights.shape[1] == 0:
            raise ValueError(
                f"weights must have shape (n_items,) or (dim, n_items); got {weights.shape}."
            )
        if len(capacities) != weights.shape[0]:
            raise ValueError(
                f"capacities has {len(capacities)} entries for the {weights.shape[0]} rows of "
                "weights."
            )
        if not (np.all(np.isfinite(weights)) and np.all(weights >= 0)):
            raise ValueError("weights must be finite and non-negative.")
        if not (np.all(np.isfinite(capacities)) and np.all(capacities >= 0)):
            raise ValueError("capacities must be finite and non-negative.")
        return weights, capacities

    @property
    def n_costs(self):
        return self._problem()[0].shape[1]

    def _solve_exact(self, costs):
        return self._exact_solver()(costs)

    def _exact_solver(self):
        """The DP with integer weights when they exist, else HiGHS; converted once."""
        weights, capacities = self._problem()
        scale = integer_scale(weights[0], capacities[0]) if len(capacities) == 1 else None
        if scale is not None:
            integer_weights = np.round(weights[0] * scale).astype(np.int64)
            capacity = int(np.round(capacities[0] * scale))
            return knapsack_solver(integer_weights, capacity)
        program = {
            "A_ub": weights,
            "b_ub": capacities,
            "A_eq": None,
            "b_eq": None,
            "bounds": (0, 1),
            "integrality": np.ones(weights.shape[1]),
        }

        def solve(costs):
            solutions = solve_milp_batch(costs.detach().cpu().numpy(), program, sense=-1)
            return torch.as_tensor(np.round(solutions)).to(device=costs.device, dtype=costs.dtype)

        return solve


Knapsack.__doc__ = Knapsack.__doc__ % _SURROGATE_DOC


class PyEPOTask(_SurrogateParams, LinearDecisionTask):
    r"""Any PyEPO optimisation model (``pyepo.model.opt.optModel``) as a task.

    The model's solver takes the decisions (one ``setObj``/``solve`` per cost vector, on
    the CPU) and its ``modelSense`` gives the sense, so any of PyEPO's problems and
    backends (Gurobi, COPT, Pyomo, OR-Tools, ...) can be trained with sktaskmet's
    estimators and surrogates. Install with ``pip install sktaskmet[pyepo]``. For the
    grid shortest path and the one-dimensional knapsack, :class:`ShortestPath` and
    :class:`Knapsack` give the same solutions much faster.

    Parameters
    ----------
    optmodel : pyepo.model.opt.optModel
    %s
    """

    def __init__(
        self,
        optmodel,
        surrogate="spo+",
        n_samples=10,
        sigma=1.0,
        dbb_lambda=10.0,
        solve_ratio=1.0,
        random_state=0,
    ):
        self.optmodel = optmodel
        self._set_surrogate(surrogate, n_samples, sigma, dbb_lambda, solve_ratio, random_state)

    def _model(self):
        model = self.optmodel
        if not (
            hasattr(model, "setObj") and hasattr(model, "solve") and hasattr(model, "num_cost")
        ):
            raise TypeError(
                "optmodel must be a PyEPO optimisation model (with setObj, solve and "
                f"num_cost); got {type(model).__name__}."
            )
        return model

    @property
    def _sign(self):
        # PyEPO: EPO.MINIMIZE = 1, EPO.MAXIMIZE = -1
        return -1 if int(getattr(self._model(), "modelSense", 1)) == -1 else 1

    @property
    def n_costs(self):
        return int(self._model().num_cost)

    def _solve_exact(self, costs):
        model = self._model()
        rows = []
        for cost in costs.detach().cpu().numpy():
            model.setObj(cost)
            solution, _ = model.solve()
            rows.append(np.asarray(solution, dtype=np.float64))
        return torch.as_tensor(np.stack(rows)).to(device=costs.device, dtype=costs.dtype)


PyEPOTask.__doc__ = PyEPOTask.__doc__ % _SURROGATE_DOC
