r"""Exact solvers of linear decision problems :math:`\min_{w \in W} c^\top w`, batched.

Every function here takes a batch of cost vectors and returns one optimal solution per
row. None of them is differentiable (solutions of linear programs are piecewise constant
in the costs); the surrogate losses in :mod:`sktaskmet.taskmet._dfl_losses` supply the
gradients.

* :func:`grid_arcs` and :func:`solve_grid_shortest_path` -- PyEPO's shortest-path problem
  on an ``(h, w)`` grid, whose arcs point east or south: a directed acyclic graph, solved
  for a whole batch of cost vectors at once, in torch on the device of the costs, by
  scoring every path with one matrix product (small grids) or by dynamic programming
  over its anti-diagonals.
* :func:`integer_scale` and :func:`solve_knapsack_dp` -- the 0-1 knapsack with one
  capacity and weights that are integers after scaling: the classic dynamic programme
  over capacities, batched over cost vectors in torch.
* :func:`solve_milp_batch` -- any linear or mixed-integer program with scipy's HiGHS, one
  instance at a time, spread over ``n_jobs`` joblib workers.
"""

import functools
import itertools
import math

import numpy as np
import torch
from joblib import Parallel, delayed

__all__ = [
    "grid_arcs",
    "grid_paths",
    "solve_grid_shortest_path",
    "integer_scale",
    "solve_knapsack_dp",
    "solve_milp_batch",
]


# --------------------------------------------------------------------------------------
# Shortest path on a grid (a DAG): dynamic programming over anti-diagonals
# --------------------------------------------------------------------------------------
def grid_arcs(grid):
    """Arcs of PyEPO's ``(h, w)`` grid network, in PyEPO's order.

    Node ``(i, j)`` is numbered ``i * w + j``. Row by row, the eastward arcs of the row
    come first, then (except in the last row) its southward arcs. The cost vector of the
    shortest-path problem has one entry per arc, in this order.

    Parameters
    ----------
    grid : tuple of int (h, w)

    Returns
    -------
    list of tuple (tail, head)
    """
    h, w = grid
    arcs = []
    for i in range(h):
        arcs += [(i * w + j, i * w + j + 1) for j in range(w - 1)]
        if i < h - 1:
            arcs += [(i * w + j, (i + 1) * w + j) for j in range(w)]
    return arcs


@functools.lru_cache(maxsize=16)
def grid_paths(grid):
    """Every north-west to south-east path of the grid, as 0/1 arc indicators.

    A path is a choice of which :math:`h - 1` of its :math:`h + w - 2` moves go south:
    :math:`\binom{h + w - 2}{h - 1}` paths (70 for 5 x 5).

    Parameters
    ----------
    grid : tuple of int (h, w)

    Returns
    -------
    ndarray of shape (n_paths, n_arcs), read-only
    """
    h, w = grid
    index = {arc: k for k, arc in enumerate(grid_arcs(grid))}
    n_moves = h + w - 2
    paths = np.zeros((math.comb(n_moves, h - 1), len(index)))
    for row, south in enumerate(itertools.combinations(range(n_moves), h - 1)):
        node, south = 0, set(south)
        for move in range(n_moves):
            nxt = node + w if move in south else node + 1
            paths[row, index[(node, nxt)]] = 1.0
            node = nxt
    paths.flags.writeable = False
    return paths


@functools.lru_cache(maxsize=16)
def _grid_plan(grid):
    """Per anti-diagonal: nodes, and for each node its west/north arc and predecessor."""
    h, w = grid
    index = {arc: k for k, arc in enumerate(grid_arcs(grid))}
    plan = []
    for diagonal in range(1, h + w - 1):
        nodes, in_arcs, preds = [], [], []
        for i in range(max(0, diagonal - w + 1), min(h, diagonal + 1)):
            j = diagonal - i
            v = i * w + j
            # (arc, predecessor) from the west and from the north; -1 where there is none
            west = (index[(v - 1, v)], v - 1) if j > 0 else (-1, -1)
            north = (index[(v - w, v)], v - w) if i > 0 else (-1, -1)
            nodes.append(v)
            in_arcs.append((west[0], north[0]))
            preds.append((west[1], north[1]))
        plan.append(tuple(torch.as_tensor(a) for a in (nodes, in_arcs, preds)))
    return plan


# Up to this many paths, scoring every path with one matrix product beats the recursion.
MAX_ENUMERATED_PATHS = 5000


@torch.no_grad()
def solve_grid_shortest_path(costs, grid, method="auto"):
    r"""Shortest north-west to south-east paths of a batch of cost vectors.

    Two exact methods. ``"enumerate"`` scores every path at once, ``costs @ paths.T``,
    and takes the cheapest: one matrix product, the fastest while the grid has few paths
    (70 for 5 x 5). ``"dp"``: arcs point east or south only, so the grid is a directed
    acyclic graph and nodes on the same anti-diagonal ``i + j`` depend only on the
    previous one; the Bellman recursion :math:`d(v) = \min(d(v_W) + c_{W \to v},\
    d(v_N) + c_{N \to v})` runs as ``h + w - 2`` vectorised steps over the whole batch,
    and the path is read back from the sink. Costs of any sign are allowed (no cycles).

    Parameters
    ----------
    costs : Tensor of shape (batch, n_arcs)
        Arc costs in the order of :func:`grid_arcs`.
    grid : tuple of int (h, w)
    method : {"auto", "enumerate", "dp"}, default="auto"
        ``"auto"`` enumerates up to ``MAX_ENUMERATED_PATHS`` paths.

    Returns
    -------
    Tensor of shape (batch, n_arcs)
        0/1 indicator of the arcs on an optimal path, dtype and device of ``costs``.
    """
    h, w = grid
    if costs.shape[0] == 0:
        return torch.zeros_like(costs)
    if method == "enumerate" or (
        method == "auto" and math.comb(h + w - 2, h - 1) <= MAX_ENUMERATED_PATHS
    ):
        paths = torch.tensor(grid_paths(grid), dtype=costs.dtype, device=costs.device)
        return paths[(costs @ paths.T).argmin(dim=1)]
    return _grid_dp(costs, grid)


def _grid_dp(costs, grid):
    h, w = grid
    batch = costs.shape[0]
    device = costs.device
    dist = torch.full((batch, h * w), torch.inf, dtype=costs.dtype, device=device)
    dist[:, 0] = 0.0
    # the arc used to enter each node, and the node it comes from
    entry_arc = torch.zeros((batch, h * w), dtype=torch.long, device=device)
    entry_pred = torch.zeros((batch, h * w), dtype=torch.long, device=device)
    padded = torch.cat([costs, torch.full_like(costs[:, :1], torch.inf)], dim=1)
    for nodes, in_arcs, preds in _grid_plan(grid):
        nodes, in_arcs, preds = nodes.to(device), in_arcs.to(device), preds.to(device)
        # index -1 picks the padding column (infinite cost) / any node (masked by inf)
        candidates = dist[:, preds.clamp(min=0).reshape(-1)].reshape(batch, -1, 2)
        candidates = candidates + padded[:, in_arcs.reshape(-1)].reshape(batch, -1, 2)
        best, which = candidates.min(dim=-1)
        dist[:, nodes] = best
        positions = torch.arange(len(nodes), device=device)
        entry_arc[:, nodes] = in_arcs[positions, which]
        entry_pred[:, nodes] = preds[positions, which]
    solution = torch.zeros_like(costs)
    node = torch.full((batch,), h * w - 1, dtype=torch.long, device=device)
    rows = torch.arange(batch, device=device)
    for _ in range(h + w - 2):
        solution[rows, entry_arc[rows, node]] = 1.0
        node = entry_pred[rows, node]
    return solution


# --------------------------------------------------------------------------------------
# 0-1 knapsack with one capacity: dynamic programming over capacities
# --------------------------------------------------------------------------------------
def integer_scale(weights, capacity, max_capacity=100_000):
    """The smallest power of ten that makes the weights and capacity integers, or None.

    PyEPO's knapsack weights have two decimals (3.00 to 7.99), so a scale of 100 turns
    them into integers and the dynamic programme applies exactly. ``None`` when no scale
    up to :math:`10^6` works or the scaled capacity would exceed ``max_capacity`` (the
    table would be too large; use a MILP solver then).

    Parameters
    ----------
    weights : ndarray of shape (n_items,)
    capacity : float
    max_capacity : int, default=100000

    Returns
    -------
    int or None
    """
    values = np.append(np.asarray(weights, dtype=np.float64), float(capacity))
    for exponent in range(7):
        scale = 10**exponent
        scaled = values * scale
        if np.all(np.abs(scaled - np.round(scaled)) <= 1e-9 * np.maximum(1.0, np.abs(scaled))):
            return scale if scaled[-1] <= max_capacity else None
    return None


@torch.no_grad()
def solve_knapsack_dp(values, weights, capacity, chunk_size=256):
    r"""Optimal 0-1 knapsacks :math:`\max_{x \in \{0,1\}^m} v^\top x` s.t. :math:`a^\top x \le C`.

    The table :math:`T_j(r)` = best value of the first j items within capacity r obeys
    :math:`T_j(r) = \max(T_{j-1}(r),\ T_{j-1}(r - a_j) + v_j)`; it is computed for a
    chunk of cost vectors at once (a ``(chunk, C + 1)`` tensor per item), the take/skip
    choices are kept, and the items are read back from the last one. Items of negative
    value are never taken.

    Parameters
    ----------
    values : Tensor of shape (batch, n_items)
    weights : sequence of int of length n_items
        Non-negative integer weights.
    capacity : int
    chunk_size : int, default=256
        Cost vectors per chunk; bounds the ``(n_items, chunk, C + 1)`` choice table.

    Returns
    -------
    Tensor of shape (batch, n_items)
        0/1 indicator of the items taken, dtype and device of ``values``.
    """
    weights = [int(a) for a in weights]
    capacity = int(capacity)
    # A common divisor of the weights and the capacity shrinks the table exactly.
    divisor = math.gcd(capacity, *weights)
    if divisor > 1:
        weights = [a // divisor for a in weights]
        capacity //= divisor
    parts = [_knapsack_chunk(chunk, weights, capacity) for chunk in torch.split(values, chunk_size)]
    if not parts:
        return values.clone()
    return torch.cat(parts)


def _knapsack_chunk(values, weights, capacity):
    # Capacity-major layout (C + 1, batch): the slices r >= a below are contiguous blocks.
    batch, n_items = values.shape
    table = torch.zeros((capacity + 1, batch), dtype=values.dtype, device=values.device)
    taken = torch.zeros((n_items, capacity + 1, batch), dtype=torch.bool, device=values.device)
    for j, a in enumerate(weights):
        if a > capacity:
            continue
        # Three passes per item, in place: capacities r >= a may take item j.
        candidate = table[: capacity + 1 - a] + values[:, j]
        upper = table[a:]
        torch.gt(candidate, upper, out=taken[j, a:])
        torch.maximum(upper, candidate, out=upper)
    solution = torch.zeros((n_items, batch), dtype=torch.bool, device=values.device)
    rows = torch.arange(batch, device=values.device)
    remaining = torch.full((batch,), capacity, dtype=torch.long, device=values.device)
    for j in range(n_items - 1, -1, -1):
        take = taken[j, remaining, rows]
        solution[j] = take
        remaining = remaining - take.long() * weights[j]
    return solution.T.to(values.dtype)


# --------------------------------------------------------------------------------------
# General linear and mixed-integer programs: scipy HiGHS, one instance per call
# --------------------------------------------------------------------------------------
_STATUS = {
    2: "infeasible",
    3: "unbounded",
}


def _solve_one(cost, program):
    from scipy.optimize import linprog

    result = linprog(
        cost,
        A_ub=program["A_ub"],
        b_ub=program["b_ub"],
        A_eq=program["A_eq"],
        b_eq=program["b_eq"],
        bounds=program["bounds"],
        integrality=program["integrality"],
        method="highs",
    )
    if result.status != 0:
        reason = _STATUS.get(result.status, "not solved")
        raise ValueError(
            f"the linear program is {reason} for a cost vector (HiGHS status "
            f"{result.status}: {result.message})"
        )
    return result.x


def solve_milp_batch(costs, program, sense=1, n_jobs=None):
    """Solve :math:`\\min_w (s c)^\\top w` over a fixed feasible set for each cost vector.

    Parameters
    ----------
    costs : ndarray of shape (batch, n_vars)
    program : dict
        ``A_ub``, ``b_ub``, ``A_eq``, ``b_eq``, ``bounds`` and ``integrality`` as
        :func:`scipy.optimize.linprog` takes them.
    sense : {1, -1}, default=1
        1 minimises :math:`c^\\top w`, -1 maximises it.
    n_jobs : int or None, default=None
        joblib workers; instances are independent.

    Returns
    -------
    ndarray of shape (batch, n_vars)

    Raises
    ------
    ValueError
        If the program is infeasible or unbounded for some cost vector.
    """
    costs = np.asarray(costs, dtype=np.float64) * sense
    if n_jobs in (None, 1) or len(costs) < 2:
        rows = [_solve_one(cost, program) for cost in costs]
    else:
        rows = Parallel(n_jobs=n_jobs)(delayed(_solve_one)(cost, program) for cost in costs)
    if not rows:
        return np.zeros_like(costs)
    return np.stack(rows)
