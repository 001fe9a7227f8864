r"""The SCML solvers: AdaGrad-scaled regularised dual averaging (RDA) on the training core.

Global SCML
-----------
With basis vectors :math:`b_1, \dots, b_K` and triplets :math:`C`, the problem is

.. math::

    \min_{w \ge 0}\; F(w) = \frac{1}{|C|} \sum_{(a,p,n) \in C}
        \big[1 + d_w(x_a, x_p) - d_w(x_a, x_n)\big]_+ + \beta \lVert w \rVert_1,
    \qquad d_w(u, v) = \sum_i w_i \big(b_i^\top (u - v)\big)^2 .

The hinge term of triplet :math:`t` is linear in :math:`w`: :math:`1 + w^\top D_t` with
:math:`D_{ti} = (b_i^\top(x_a - x_p))^2 - (b_i^\top(x_a - x_n))^2`. A mini-batch
subgradient is :math:`g = \frac{1}{|B|}\sum_{t \in B,\, 1 + w^\top D_t > 0} D_t`.
RDA keeps the running mean :math:`\bar g_t` of the subgradients and AdaGrad the
accumulator :math:`H_t = \sqrt{\sum_{s \le t} g_s^2}` (per coordinate); the next iterate
solves :math:`\min_{w \ge 0} \langle \bar g_t, w\rangle + \beta\lVert w\rVert_1 +
\frac{\gamma(\delta + H_t)}{2(t+1)} \lVert w \rVert^2` in closed form:

.. math::

    w_{t+1} = \frac{t + 1}{\gamma (\delta + H_t)} \max\big(-(\bar g_t + \beta), 0\big).

Every ``output_iter`` iterations two candidates are evaluated, the iterate and the
running mean of the iterates (the point RDA's convergence guarantee is about), each with
its overall scale tuned by an exact line search (:math:`F(\alpha w)` is convex and
piecewise linear in :math:`\alpha`), and the best point seen is kept; the iterations
themselves continue from the untouched iterate.

Local SCML
----------
The weights depend on the point through an embedding :math:`z(x) \in \mathbb{R}^m`
(kernel PCA): :math:`w_i(x) = (\theta_i^\top \tilde z(x))^2` with
:math:`\tilde z = [z; 1]` and :math:`\theta_i = [a_i; c_i]`, evaluated at the anchor of
each triplet, and a group-lasso penalty :math:`\beta \sum_i \lVert\theta_i\rVert_2`.
The same RDA scheme with one AdaGrad scale per group and the group soft-threshold runs
centred on the initial point :math:`\theta^{(0)}` (the global solution:
:math:`a_i = 0`, :math:`c_i = \sqrt{w_i}`), so the local model starts where the global one
ended. The problem is not convex; the best full objective seen is kept.

Where the pieces live
---------------------
:mod:`._minibatches` draws the mini-batches and forms their :math:`D_t`;
:mod:`._rda` runs the recursions (numpy, torch or a fused kernel for the global one);
:mod:`._objective` and :mod:`._pairs` compute the full objectives; :mod:`._line_search`
tunes the scale of a global candidate; :mod:`._kernel_pca` is the local embedding. This
module drives a solve on the training core (:class:`~sktaskmet._training.TrainingLoop`):
one step per evaluation of the full objective, the first at the starting point, so that
the history, the best-state restore, the non-finite guard
(:class:`~sktaskmet.exceptions.NonFiniteWarning`), ``verbose`` and scikit-learn's
callbacks are those of every other iterative estimator.
"""

import math

import torch

from .._training import STOP_NON_FINITE, TrainingLoop
from ._minibatches import (
    BLOCK_ITERATIONS,
    BlockDifferences,
    Projector,
    index_stream,
    span_blocks,
    spans,
)
from ._objective import local_objective_projected, tuned_candidates
from ._pairs import TripletPairs
from ._rda import LocalRDAState, global_rda_state

__all__ = ["SolverResult", "evaluation_points", "rda_global", "rda_local"]

# F(0) of the global problem: every hinge is 1 and the penalty is 0.
_OBJECTIVE_AT_ZERO = 1.0


class SolverResult:
    """What a solve returns: the best iterate, its objective and the history.

    Attributes
    ----------
    coef : torch.Tensor
        Best iterate (``w`` of shape (K,) for the global solver, ``theta`` of shape
        (K, m + 1) for the local one).
    objective : float
        Full objective of ``coef``.
    history : list of (int, float)
        (iteration, full objective) at every evaluation, iteration 0 being the start.
    n_iter : int
        Iterations run.
    failed : bool
        Whether the solve stopped on a non-finite value.
    """

    def __init__(self, coef, objective, history, n_iter, failed):
        self.coef = coef
        self.objective = objective
        self.history = history
        self.n_iter = n_iter
        self.failed = failed


def evaluation_points(max_iter, output_iter):
    """Iterations after which the full objective is evaluated: 0 (the start), every
    ``output_iter``, and ``max_iter``."""
    return list(range(0, max_iter, output_iter)) + [max_iter]


class _GlobalProblem:
    """The global solve's state between evaluations: the recursion and the kept candidate.

    ``advance(stop)`` runs the mini-batch iterations up to ``stop``; ``evaluate()`` gives
    the candidate of the current iterate and its full objective.
    """

    def __init__(self, X, triplets, basis, *, beta, gamma, batch_size, generator):
        self.X, self.triplets, self.basis = X, triplets, basis
        self.beta, self.batch_size = beta, batch_size
        self.state = global_rda_state(
            basis.shape[0],
            beta=beta,
            gamma=gamma,
            batch_size=batch_size,
            dtype=X.dtype,
            device=X.device,
        )
        self.take = index_stream(triplets.shape[0], generator, X.device)
        self.block_diffs = BlockDifferences(
            Projector(X, basis), self.state.block_iterations * batch_size
        )
        self.pairs = TripletPairs(triplets, X.shape[0])
        self.coef, self.objective = self.state.weights(), math.nan

    @property
    def iteration(self):
        return self.state.iteration

    def advance(self, stop):
        n_basis, batch_size = self.basis.shape[0], self.batch_size
        for start, end in spans(self.state.iteration, stop):
            for n_block, columns in span_blocks(
                self.triplets, self.take, end - start, batch_size, self.state.block_iterations
            ):
                self.state.run(self.block_diffs(columns).view(n_block, batch_size, n_basis))

    def evaluate(self):
        if self.state.iteration == 0:
            return self.state.weights(), _OBJECTIVE_AT_ZERO
        # The iterate and the running mean of the iterates (RDA's convergence guarantee is
        # for the mean, which is far steadier than the last iterate when the steps are
        # large), each with its scale tuned; the better one is the candidate.
        (candidate, objective), (averaged, averaged_objective) = tuned_candidates(
            self.X,
            self.pairs,
            self.basis,
            [self.state.weights(), self.state.mean_weights()],
            self.beta,
        )
        if averaged_objective < objective:
            return averaged, averaged_objective
        return candidate, objective


class _LocalProblem:
    """The local solve's state between evaluations (see :class:`_GlobalProblem`)."""

    def __init__(
        self, X, embedding, triplets, basis, theta0, *, beta, gamma, batch_size, generator
    ):
        self.triplets, self.embedding = triplets, embedding
        self.beta, self.batch_size = beta, batch_size
        ones = torch.ones(X.shape[0], 1, dtype=X.dtype, device=X.device)
        self.augmented = torch.cat([embedding, ones], dim=1)  # [z; 1]
        self.state = LocalRDAState(theta0, beta=beta, gamma=gamma, batch_size=batch_size)
        self.take = index_stream(triplets.shape[0], generator, X.device)
        self.project = Projector(X, basis)
        self.block_diffs = BlockDifferences(self.project, BLOCK_ITERATIONS * batch_size)
        self.coef, self.objective = theta0, math.nan

    @property
    def iteration(self):
        return self.state.iteration

    def advance(self, stop):
        n_basis, width = self.state.theta.shape
        batch_size = self.batch_size
        for start, end in spans(self.state.iteration, stop):
            for n_block, columns in span_blocks(
                self.triplets, self.take, end - start, batch_size, BLOCK_ITERATIONS
            ):
                diffs = self.block_diffs(columns).view(n_block, batch_size, n_basis)
                anchors = self.augmented[columns[0]].view(n_block, batch_size, width)
                self.state.run(diffs, anchors)

    def evaluate(self):
        theta = self.state.theta
        objective = local_objective_projected(
            self.project, self.embedding, self.triplets, theta, self.beta
        )
        return theta, float(objective)


def _solve(problem, points, *, stage, name, verbose, advice, callbacks, fitted_attributes):
    """Run ``problem`` on the training core, one step per evaluation point.

    Step ``k`` runs the iterations up to ``points[k - 1]`` and evaluates the candidate
    there; the core keeps the candidate of lowest objective (ties: the earliest), and stops
    at a non-finite objective or candidate, leaving the best one found before it.
    """

    def step(k):
        problem.advance(points[k - 1])
        coef, objective = problem.evaluate()
        if not math.isfinite(objective) or not bool(torch.isfinite(coef).all()):
            return None  # the kept candidate is untouched: the "checked" guard
        problem.coef, problem.objective = coef, objective
        return {"objective": objective}

    def snapshot():
        return problem.coef.clone(), problem.objective

    def restore(state):
        problem.coef, problem.objective = state

    if callbacks is not None:
        current = None if fitted_attributes is None else lambda: fitted_attributes(problem.coef)
        callbacks = callbacks.stage(stage, fitted_attributes=current)
    result = TrainingLoop(
        step,
        max_iter=len(points),
        snapshot=snapshot,
        restore=restore,
        monitor="train_objective",
        guard="checked",
        name=f"{name} {stage}",
        verbose=verbose,
        advice=advice,
        callbacks=callbacks,
    ).run()
    objectives = result.history.get("train_objective", [])
    history = [(point, float(value)) for point, value in zip(points, objectives, strict=False)]
    failed = result.stop_reason == STOP_NON_FINITE
    return SolverResult(problem.coef, problem.objective, history, problem.iteration, failed)


@torch.inference_mode()
def rda_global(
    X,
    triplets,
    basis,
    *,
    beta,
    gamma,
    max_iter,
    batch_size,
    output_iter,
    generator,
    verbose=0,
    name="SCML",
    callbacks=None,
    fitted_attributes=None,
):
    r"""Global SCML by AdaGrad-RDA with the non-negative :math:`\ell_1` prox.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
    triplets : torch.Tensor of shape (n_triplets, 3), int64
    basis : torch.Tensor of shape (K, n_features)
    beta, gamma : float
        :math:`\ell_1` strength and the inverse step size.
    max_iter, batch_size, output_iter : int
    generator : torch.Generator
        On the device of X; draws the mini-batches.
    verbose : int, default=0
        Print the full objective at every evaluation.
    name : str, default="SCML"
        Prefix of the progress lines and of the warnings (the estimator's name).
    callbacks : FitCallbacks or None, default=None
        The callbacks of the estimator's fit; the solve runs as its stage
        ``"global solve"``.
    fitted_attributes : callable or None, default=None
        ``coef -> dict`` of the estimator's fitted attributes for a candidate: what
        callbacks such as ``ScoringMonitor`` score at each evaluation. None when a
        candidate cannot predict on its own.

    Returns
    -------
    SolverResult
        ``coef`` is the best weight vector :math:`w` (shape (K,)).
    """
    problem = _GlobalProblem(
        X, triplets, basis, beta=beta, gamma=gamma, batch_size=batch_size, generator=generator
    )
    return _solve(
        problem,
        evaluation_points(max_iter, output_iter),
        stage="global solve",
        name=name,
        verbose=verbose,
        advice="Scale the features or increase gamma.",
        callbacks=callbacks,
        fitted_attributes=fitted_attributes,
    )


@torch.inference_mode()
def rda_local(
    X,
    embedding,
    triplets,
    basis,
    theta0,
    *,
    beta,
    gamma,
    max_iter,
    batch_size,
    output_iter,
    generator,
    verbose=0,
    name="SCML",
    callbacks=None,
    fitted_attributes=None,
):
    r"""Local SCML by AdaGrad-RDA with the group-lasso prox, centred on ``theta0``.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
    embedding : torch.Tensor of shape (n_samples, m)
        :math:`z(x)` of every training point.
    triplets : torch.Tensor of shape (n_triplets, 3)
    basis : torch.Tensor of shape (K, n_features)
    theta0 : torch.Tensor of shape (K, m + 1)
        Starting point, rows :math:`[a_i; c_i]`.
    beta, gamma : float
        Group-lasso strength and the inverse step size.
    max_iter, batch_size, output_iter : int
    generator : torch.Generator
        On the device of X; draws the mini-batches.
    verbose, name, callbacks, fitted_attributes
        As in :func:`rda_global`; the stage is ``"local solve"``.

    Returns
    -------
    SolverResult
        ``coef`` is the best :math:`\theta` (shape (K, m + 1)).
    """
    problem = _LocalProblem(
        X,
        embedding,
        triplets,
        basis,
        theta0,
        beta=beta,
        gamma=gamma,
        batch_size=batch_size,
        generator=generator,
    )
    return _solve(
        problem,
        evaluation_points(max_iter, output_iter),
        stage="local solve",
        name=name,
        verbose=verbose,
        advice="Increase local_gamma.",
        callbacks=callbacks,
        fitted_attributes=fitted_attributes,
    )
