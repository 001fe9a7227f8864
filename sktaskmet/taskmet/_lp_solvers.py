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
* :func:`knapsack_split_plan` and :func:`solve_knapsack_split` -- the same knapsack by
  meeting in the middle, when each half of the items has few subsets that fit: a few
  matrix products and a running maximum per batch instead of the table.
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
    "knapsack_rows",
    "solve_knapsack_dp",
    "knapsack_split_plan",
    "solve_knapsack_split",
    "knapsack_solver",
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
    # Without a graph, nothing below records one: cheaper than entering no_grad at each of
    # the hundreds of solves of a fit.
    costs = costs.detach() if costs.requires_grad else costs
    if costs.shape[0] == 0:
        return torch.zeros_like(costs)
    if method == "enumerate" or (
        method == "auto" and math.comb(h + w - 2, h - 1) <= MAX_ENUMERATED_PATHS
    ):
        paths = _path_matrix(grid, costs.dtype, costs.device)
        return paths[(costs @ paths.T).argmin(dim=1)]
    return _grid_dp(costs, grid)


@functools.lru_cache(maxsize=16)
def _path_matrix(grid, dtype, device):
    # Built once per grid, dtype and device: copying it in at every solve costs as much
    # as the product itself on a 5 x 5 grid.
    return torch.tensor(grid_paths(grid), dtype=dtype, device=device)


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


def knapsack_rows(weights, capacity):
    r"""The capacities each item's update must cover, exactly: ``(low, high)`` per item.

    Only the capacity :math:`C` of the last table is read, and item :math:`k` reads the
    previous table at :math:`r` and :math:`r - a_k`, so table :math:`j` is needed from
    :math:`C - \sum_{k > j} a_k` up; and :math:`T_j` is constant above the prefix sum
    :math:`P_j = \sum_{k \le j} a_k` (every item so far fits). Item j therefore updates
    :math:`r \in [\max(a_j, C - \sum_{k>j} a_k),\ \min(C, P_j)]`, the rows above
    :math:`\min(C, P_j)` being copies of that row. With PyEPO's knapsack (32 items of 3
    to 8, capacity 20) this skips about a tenth of the table.

    Parameters
    ----------
    weights : sequence of int
        Non-negative integer weights, each at most ``capacity``, summing to more than it.
    capacity : int

    Returns
    -------
    list of tuple (low, high)
    """
    weights = [int(a) for a in weights]
    suffix = np.cumsum([0] + weights[::-1])[::-1][1:]  # weight of the items after j
    rows, prefix = [], 0
    for a, after in zip(weights, suffix.tolist(), strict=True):
        prefix += a
        rows.append((max(a, capacity - after), min(capacity, prefix)))
    return rows


@torch.no_grad()
def solve_knapsack_dp(values, weights, capacity, chunk_size=256, backend="auto"):
    r"""Optimal 0-1 knapsacks :math:`\max_{x \in \{0,1\}^m} v^\top x` s.t. :math:`a^\top x \le C`.

    The table :math:`T_j(r)` = best value of the first j items within capacity r obeys
    :math:`T_j(r) = \max(T_{j-1}(r),\ T_{j-1}(r - a_j) + v_j)`; it is computed for a
    chunk of cost vectors at once (a ``(C + 1, chunk)`` array updated in place, item by
    item, over the rows of :func:`knapsack_rows` only), the take/skip choices are kept,
    and the items are read back from the last one. Ties keep the earlier items' choice
    (an item is taken only when strictly better). Items of negative value are never
    taken. The weights and capacity are first divided by their greatest common divisor,
    items heavier than the capacity dropped, and when everything fits the answer is the
    items of positive value. On the CPU the table lives in numpy (whose in-place
    element-wise operations cost about a microsecond to call, against about eight for
    torch's: the update is three such operations per item); on other devices in torch.

    Parameters
    ----------
    values : Tensor of shape (batch, n_items)
    weights : sequence of int of length n_items
        Non-negative integer weights.
    capacity : int
    chunk_size : int, default=256
        Cost vectors per chunk; bounds the ``(n_items, C + 1, chunk)`` choice table.
    backend : {"auto", "numpy", "torch"}, default="auto"
        Where the table lives; ``"auto"``: numpy for CPU tensors, torch otherwise.

    Returns
    -------
    Tensor of shape (batch, n_items)
        0/1 indicator of the items taken, dtype and device of ``values``.
    """
    if backend not in ("auto", "numpy", "torch"):
        raise ValueError(f"backend must be 'auto', 'numpy' or 'torch'; got {backend!r}.")
    weights = np.asarray([int(a) for a in weights], dtype=np.int64)
    capacity = int(capacity)
    device = values.device
    fits = weights <= capacity
    if values.shape[0] == 0 or not fits.any():
        return torch.zeros_like(values)
    if not fits.all():  # items heavier than the capacity are never taken
        solution = torch.zeros_like(values)
        columns = torch.as_tensor(np.flatnonzero(fits), device=values.device)
        solution[:, columns] = solve_knapsack_dp(
            values[:, columns], weights[fits], capacity, chunk_size, backend
        )
        return solution
    # A common divisor of the weights and the capacity shrinks the table exactly.
    divisor = max(math.gcd(capacity, *weights.tolist()), 1)
    weights, capacity = weights // divisor, capacity // divisor
    if int(weights.sum()) <= capacity:  # everything fits: take what is worth taking
        return (values > 0).to(values.dtype)
    on_cpu = values.device.type == "cpu"
    use_numpy = backend == "numpy" or (backend == "auto" and on_cpu)
    if use_numpy and not on_cpu:
        values = values.cpu()
    chunk = _knapsack_chunk_numpy if use_numpy else _knapsack_chunk_torch
    rows = knapsack_rows(weights, capacity)
    parts = [chunk(part, weights, capacity, rows) for part in torch.split(values, chunk_size)]
    solution = parts[0] if len(parts) == 1 else torch.cat(parts)
    return solution.to(device=device, dtype=values.dtype)


def _knapsack_chunk_numpy(values, weights, capacity, rows):
    # Capacity-major layout (C + 1, batch): the row ranges below are contiguous blocks.
    batch, n_items = values.shape
    items = np.ascontiguousarray(values.numpy().T)
    table = np.zeros((capacity + 1, batch), dtype=items.dtype)
    scratch = np.empty_like(table)
    taken = np.zeros((n_items, capacity + 1, batch), dtype=bool)
    filled = 0  # rows above this one are copies of it (constant above the prefix sum)
    for j, (a, (low, high)) in enumerate(zip(weights.tolist(), rows, strict=True)):
        if high > filled:
            table[filled + 1 : high + 1] = table[filled]
            filled = high
        candidate = scratch[: high + 1 - low]
        np.add(table[low - a : high + 1 - a], items[j], out=candidate)
        np.greater(candidate, table[low : high + 1], out=taken[j, low : high + 1])
        np.maximum(table[low : high + 1], candidate, out=table[low : high + 1])
    flat = taken.reshape(n_items, -1)
    columns = np.arange(batch)
    remaining = np.full(batch, capacity, dtype=np.int64)
    solution = np.zeros((batch, n_items), dtype=bool)
    for j in range(n_items - 1, -1, -1):
        # above its high row an item's choice is that of the high row
        take = flat[j].take(np.minimum(remaining, rows[j][1]) * batch + columns)
        solution[:, j] = take
        remaining -= take * int(weights[j])
    return torch.from_numpy(solution)


def _knapsack_chunk_torch(values, weights, capacity, rows):
    # The same recursion in torch, for tensors on an accelerator.
    batch, n_items = values.shape
    device = values.device
    items = values.T.contiguous()
    table = torch.zeros((capacity + 1, batch), dtype=values.dtype, device=device)
    taken = torch.zeros((n_items, capacity + 1, batch), dtype=torch.bool, device=device)
    filled = 0
    for j, (a, (low, high)) in enumerate(zip(weights.tolist(), rows, strict=True)):
        if high > filled:
            table[filled + 1 : high + 1] = table[filled]
            filled = high
        candidate = table[low - a : high + 1 - a] + items[j]
        upper = table[low : high + 1]
        torch.gt(candidate, upper, out=taken[j, low : high + 1])
        torch.maximum(upper, candidate, out=upper)
    highs = torch.as_tensor([high for _, high in rows], device=device)
    columns = torch.arange(batch, device=device)
    remaining = torch.full((batch,), capacity, dtype=torch.long, device=device)
    solution = torch.zeros((batch, n_items), dtype=torch.bool, device=device)
    for j in range(n_items - 1, -1, -1):
        take = taken[j, torch.minimum(remaining, highs[j]), columns]
        solution[:, j] = take
        remaining = remaining - take.long() * int(weights[j])
    return solution


def _fitting_subsets(weights, capacity, limit):
    """Subsets of the items whose weight is at most ``capacity``, or None past ``limit``.

    Grown item by item (each subset so far, with and without the next item), so only
    subsets that fit are ever built. Returns 0/1 masks (k, n) and weights (k,).
    """
    masks = np.zeros((1, len(weights)), dtype=bool)
    totals = np.zeros(1, dtype=np.int64)
    for j, a in enumerate(weights):
        fits = totals + a <= capacity
        grown = masks[fits]
        grown[:, j] = True
        masks, totals = np.concatenate([masks, grown]), np.concatenate([totals, totals[fits] + a])
        if len(totals) > limit:
            return None
    return masks, totals


def knapsack_split_plan(weights, capacity, max_subsets=None):
    r"""The subsets that :func:`solve_knapsack_split` scores, or None when there are too many.

    The items are split into two halves A and B; each half's subsets that fit within the
    capacity are listed once (they depend on the weights only), B's sorted by weight.
    For each subset :math:`S_A` the plan keeps the last position of B's list whose weight
    fits beside it, :math:`p(S_A) = \max\{k : a(S_B^{(k)}) \le C - a(S_A)\}`.

    Parameters
    ----------
    weights : sequence of int
        Non-negative integer weights.
    capacity : int
    max_subsets : int or None, default=None
        Give up (return None) when a half has more fitting subsets than this; ``None``:
        an eighth of the cells of the dynamic programme's table per cost vector, a
        conservative rule of thumb: on PyEPO's knapsack, with subsets about a fourteenth
        of the cells, the split is 4.5 times faster than the table.

    Returns
    -------
    tuple (n_first, masks_a, masks_b, positions) of ndarrays, or None
    """
    weights = np.asarray([int(a) for a in weights], dtype=np.int64)
    capacity = int(capacity)
    if max_subsets is None:
        rows = knapsack_rows(np.minimum(weights, capacity), capacity)
        max_subsets = max(sum(high + 1 - low for low, high in rows) // 8, 1)
    half = len(weights) // 2
    first = _fitting_subsets(weights[:half], capacity, max_subsets)
    second = _fitting_subsets(weights[half:], capacity, max_subsets)
    if first is None or second is None:
        return None
    order = np.argsort(second[1], kind="stable")
    masks_b, weights_b = second[0][order], second[1][order]
    # the empty subset (weight 0) always fits, so every position is at least 0
    positions = np.searchsorted(weights_b, capacity - first[1], side="right") - 1
    return half, first[0], masks_b, positions


def solve_knapsack_split(values, plan):
    r"""Optimal 0-1 knapsacks by meeting in the middle, for a whole batch at once.

    With the halves' fitting subsets from :func:`knapsack_split_plan`, the values of all
    of them are two matrix products; a running maximum over B's list (sorted by weight)
    gives, at each position, the best B subset up to that weight, and the optimum is

    .. math::
        \max_{S_A}\; v(S_A) + \max_{k \le p(S_A)} v(S_B^{(k)}),

    exact since every feasible knapsack is one A subset and one B subset that fit
    together. The cost is the number of fitting subsets, not the capacity: with
    PyEPO's knapsack (32 items of 3 to 8, capacity 20) about 1500 subsets per half
    against 1.3 million cells of the table for a batch of 32. Ties go to the first
    A subset in the plan's order.

    Parameters
    ----------
    values : Tensor of shape (batch, n_items)
    plan : tuple
        From :func:`knapsack_split_plan` for these items' weights and capacity.

    Returns
    -------
    Tensor of shape (batch, n_items)
        0/1 indicator of the items taken, dtype and device of ``values``.
    """
    values = values.detach() if values.requires_grad else values  # then no graph below
    tensors = _split_plan_tensors(plan, values.dtype, values.device)
    half, masks_a, masks_b, positions, columns_a, columns_b = tensors
    value_a = values[:, :half] @ columns_a
    best_b, where_b = torch.cummax(values[:, half:] @ columns_b, dim=1)
    # index_select along the columns is several times cheaper than best_b[:, positions]
    chosen_a = (value_a + best_b.index_select(1, positions)).argmax(dim=1)
    chosen_b = where_b.gather(1, positions[chosen_a].unsqueeze(1)).squeeze(1)
    return torch.cat([masks_a[chosen_a], masks_b[chosen_b]], dim=1)


def _split_plan_tensors(plan, dtype, device):
    # Converted once per dtype and device and kept with the plan: a fit solves hundreds
    # of batches with the same one.
    cache = plan[-1] if isinstance(plan[-1], dict) else None
    key = (dtype, device)
    if cache is not None and key in cache:
        return cache[key]
    half, masks_a, masks_b, positions = plan[:4]
    masks_a = torch.as_tensor(masks_a, dtype=dtype, device=device)
    masks_b = torch.as_tensor(masks_b, dtype=dtype, device=device)
    # the masks transposed and contiguous too, the right operand of the value products
    columns_a, columns_b = masks_a.T.contiguous(), masks_b.T.contiguous()
    positions = torch.as_tensor(positions, device=device)
    tensors = (half, masks_a, masks_b, positions, columns_a, columns_b)
    if cache is not None:
        cache[key] = tensors
    return tensors


def knapsack_solver(weights, capacity):
    """The exact batch solver of one knapsack: split when it is cheaper, else the table.

    Parameters
    ----------
    weights : sequence of int
        Non-negative integer weights.
    capacity : int

    Returns
    -------
    callable
        ``values (batch, n_items) -> solutions (batch, n_items)``, no graph.
    """
    weights = np.asarray([int(a) for a in weights], dtype=np.int64)
    capacity = int(capacity)
    plan = knapsack_split_plan(weights, capacity) if int(weights.sum()) > capacity else None
    if plan is None:
        return lambda values: solve_knapsack_dp(values.detach(), weights, capacity)
    plan = (*plan, {})  # with its cache of tensors per dtype and device
    return lambda values: solve_knapsack_split(values, plan)


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
