"""TaskMet on PyEPO's shortest path and knapsack: closed-form inner solve, 2-stage, DFL.

A reduced version of the protocol of the shortest-path study (PyEPO's 5 x 5 grid, 40 edge
costs from 5 features, noise half-width 0.5, ``make_shortest_path`` reproducing PyEPO's
``genData`` bit for bit; ``--problem knapsack``: PyEPO's 32-item knapsack with one capacity
of 20, ``make_knapsack``), one CPU thread. For each (seed, degree) the same data trains every
method in turn, and the script prints, per fit and then as mean +- std over seeds:

* normalised regret on the test set in % (PyEPO's definition, ``normalized_regret``);
* test MSE, mean over the entries of the cost vector;
* fit time: CPU seconds of this process (``time.process_time``), and wall seconds.

Methods (choose with ``--methods``):

``ls``
    Two-stage least squares (scikit-learn ``LinearRegression``).
``dfl``
    ``DFLRegressor(ShortestPath(surrogate="spo+"), alpha=0)``, linear, PyEPO's tutorial
    settings (Adam 1e-2, batch 32, 20 epochs), no validation split.
``dfl-a0.001`` ... ``dfl-a0.1``
    ``dfl`` with ``alpha`` times the MSE added to its SPO+ loss: the regret a linear model
    trained on both objectives reaches at each level of prediction error.
``dfl-pfyl-a0`` ... ``dfl-pfyl-a0.1``
    The same with PFYL (10 perturbation samples, sigma 1) instead of SPO+.
``dfl-dpor-a0`` ... ``dfl-dpor-a0.03``
    The same with the perturbed optimiser's regret (``"dpo-regret"``, 10 samples, sigma 1).
``tm-before``
    ``TaskMetRegressor`` with its defaults (conditional full metric, Adam inner solve),
    SPO+ task, ``max_iter=200``: the configuration of the study.
``tm-default``
    ``TaskMetRegressor(ShortestPath(surrogate="spo+"))`` with every default, ``max_iter``
    included (1000, with early stopping on the validation task loss).
``cf-*``
    ``TaskMetRegressor(inner_solver="closed_form", max_iter=200, learning_rate=1e-2)``:
    ``cf-full`` (conditional full metric) and ``cf-diag`` (conditional diagonal), with SPO+;
    ``cf-diag-pfyl`` and ``cf-diag-h64-a*-pfyl`` with PFYL as the outer loss; ``-dl`` variants
    pick the iteration by the validation decisions (``validation_loss="decision_loss"``) instead
    of the validation SPO+ loss; ``-a0.01`` (``-a0.03``) adds ``alpha=0.01`` (0.03) times the
    MSE (summed over the 40 costs) to the outer objective; ``-lr3e-2`` uses
    ``learning_rate=3e-2``; ``-h64`` a metric network of 64 hidden units (instead of 200) with
    ``learning_rate=2e-2``; ``-b100`` / ``-b200`` outer mini-batches of 100 / 200 instances
    (instead of 50); ``-ls-start``: the metric network's last layer starts at zero weights, so
    the metric starts constant and the first iterate is least squares (:class:`TwoStageStart`);
    ``-refit``: after the fit, the predictor is solved again on all training instances,
    validation ones included, with the chosen metric (:class:`RefitOnAll`); ``-ens3``: the mean
    prediction of three fits whose metric networks start from different draws
    (:class:`MetricEnsemble`); ``-it400`` / ``-it800``: ``max_iter`` 400 / 800 instead of 200;
    ``-pfyl-s10`` / ``-pfyl-s30``: PFYL with 10 / 30 perturbation samples instead of 3
    (``-pfyl-s10-b200``: and outer batches of 200 instances); ``-avg0.9`` / ``-avg0.97``: the
    kept predictor is an exponential moving average of the iterates with that decay
    (:func:`averaged_iterates`); ``-dpor-sg0.5`` / ``-sg1`` / ``-sg2``: the outer loss is the
    regret of the perturbed optimiser's mean decision (``surrogate="dpo-regret"``, 10
    perturbation samples of that standard deviation); ``-noval100`` ... ``-noval8000``: no
    validation split (``validation_fraction=None``), every training instance in the fit and
    the last of 100 ... 8000 outer steps kept (``-noval300-lr0.01`` / ``-lr0.04``: 300 steps
    at that learning rate; ``cf-diag-h64-a0.01-noval300`` / ``a0.003`` / ``a0.02`` (and
    ``-noval800``): 300 (800) steps with that ``alpha``, SPO+;
    ``cf-diag-h64-a0.003-pfyl-s10-noval300`` / ``a0.005`` / ``a0.02``: the knapsack's
    configuration with that ``alpha``; ``cf-diag-h64-a0.01-pfyl-s10-sg0.5-noval300`` /
    ``sg2``: the knapsack's configuration with PFYL's perturbation scale 0.5 / 2 instead of
    1; ``cf-diag-h64-a0.01-pfyl0.5-spo-s10-noval300`` / ``pfyl0.67`` / ``pfyl0.8``: the
    knapsack's configuration whose outer loss is w PFYL + (1 - w) SPO+ with w = 0.5 / 0.67 /
    0.8 (the task's ``surrogate={"pfyl": w, "spo+": 1 - w}``), ``...-pfyl0.8-spo-s10-noval600``
    / ``noval800``: that mixture with 600 / 800 outer steps, and with ``-a0.005`` /
    ``-a0.007`` in place of ``-a0.01``: with that ``alpha``; ``-noval300-b100``: with
    outer batches of 100 instances;
    ``cf-diag-h64-rel0.005-noval800`` / ``rel0.01`` and
    ``cf-diag-h64-rel0.05-pfyl-s10-noval300`` / ``rel0.1``: ``alpha`` relative to the
    training MSE of least squares, :class:`RelativeAlpha`); ``-iid`` (also
    ``dfl-iid``): every batch an independent draw of distinct instances, the rule before
    batches came by random reshuffling (:class:`IndependentBatches`).
    All others hold out 10% of the training instances for validation.

``--model-seeds K`` fits every method K times on each data draw, with the model seeds
``seed + 1000 k`` (k < K; k = 0 is the run above), and prints each method's spread over
model seeds on the same data: the part of the seed-to-seed spread that the method's own
randomness (initial metric, mini-batches, perturbations) adds to that of the data.

``--timing-repeats R`` then times every method R more times, interleaved, on the last
degree and the first seed, and prints the minimum and median CPU time per fit.

Run (one thread; the machine may be shared, CPU time is the figure to compare)::

    nice -n 10 python benchmarks/bench_taskmet_linear_decisions.py --degrees 1 6 --seeds 2
"""

import argparse
import contextlib
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sklearn.linear_model import LinearRegression

from sktaskmet import DFLRegressor, TaskMetRegressor
from sktaskmet.datasets import make_knapsack, make_shortest_path
from sktaskmet.taskmet import _bilevel as bilevel
from sktaskmet.taskmet import _dfl as dfl_module
from sktaskmet.taskmet import _estimator as taskmet_estimator
from sktaskmet.taskmet._bilevel import metric_values, normalize_metric
from sktaskmet.taskmet._closed_form import ClosedFormBilevelSolver, weighted_least_squares
from sktaskmet.tasks import Knapsack, ShortestPath

NOISE, FEATURES, GRID = 0.5, 5, (5, 5)
KNAPSACK_ITEMS, KNAPSACK_CAPACITY = 32, 20.0  # PyEPO's knapsack, as in bench_decision_pyepo
DFL_LR, DFL_BATCH, DFL_EPOCHS = 1e-2, 32, 20  # PyEPO's tutorial settings


def dfl_regressor(task, n_train, seed, epochs=DFL_EPOCHS):
    """``DFLRegressor`` on ``task`` with PyEPO's tutorial settings, linear model, no validation."""
    steps = epochs * int(np.ceil(n_train / DFL_BATCH))
    return DFLRegressor(
        task,
        alpha=0.0,
        learning_rate=DFL_LR,
        batch_size=DFL_BATCH,
        max_iter=steps,
        validation_fraction=None,
        validation_interval=steps,
        device="cpu",
        random_state=seed,
    )


def shortest_path_task(**options):
    return ShortestPath(GRID, **options)


def dfl(seed, n_train, make_task=shortest_path_task, alpha=0.0, surrogate="spo+"):
    task = make_task(surrogate=surrogate, n_samples=10, sigma=1.0)
    return dfl_regressor(task, n_train, seed).set_params(alpha=alpha)


def dfl_with_mse(alpha, surrogate="spo+"):
    """``dfl`` with ``alpha`` times the MSE added to its loss: the two-objective frontier."""
    return lambda seed, n_train, make_task=shortest_path_task: dfl(
        seed, n_train, make_task, alpha, surrogate
    )


def taskmet_before(seed, n_train, make_task=shortest_path_task):
    return TaskMetRegressor(
        make_task(surrogate="spo+"), max_iter=200, device="cpu", random_state=seed
    )


def taskmet_default(seed, n_train, make_task=shortest_path_task):
    return TaskMetRegressor(make_task(surrogate="spo+"), device="cpu", random_state=seed)


class TwoStageStart(TaskMetRegressor):
    r"""TaskMet whose conditional metric starts constant: its first iterate is least squares.

    The last layer of the metric network starts with zero weights (its bias stays), so
    :math:`\Lambda(x)` is the same for every x at the start and the closed-form inner
    solution of the first outer step is the two-stage least-squares fit.
    """

    def _make_metric(self, n_features, n_outputs):
        metric = super()._make_metric(n_features, n_outputs)
        with torch.no_grad():
            metric.network[-1].weight.zero_()
        return metric


class RelativeAlpha(TaskMetRegressor):
    """TaskMet whose ``alpha`` weighs the squared error relative to least squares': the fit
    uses ``alpha / mse_ls``, with ``mse_ls`` the training MSE of two-stage least squares on
    the same data. The accuracy term then asks for a fraction of least squares' error
    whatever the misspecification: strong where least squares fits well (low degree), weak
    where it does not (high degree)."""

    def fit(self, X, y, groups=None):
        residual = LinearRegression().fit(X, y).predict(X) - y
        alpha = self.alpha
        self.set_params(alpha=alpha / float(np.mean(residual**2)))
        try:
            return super().fit(X, y, groups)
        finally:
            self.set_params(alpha=alpha)


class RefitOnAll(TaskMetRegressor):
    """TaskMet whose linear predictor is solved again, after the fit, on every training
    instance (the validation split included) in the chosen metric: the refit of a
    cross-validated estimator, which the closed-form inner solve makes one solve."""

    def fit(self, X, y, groups=None):
        super().fit(X, y, groups)
        X = torch.as_tensor(np.asarray(X, dtype=np.float64))
        Y = torch.as_tensor(np.asarray(y, dtype=np.float64)).reshape(len(X), -1)
        with torch.no_grad():
            metric = self._metric_module("cpu", torch.float64)
            values, _ = normalize_metric(metric_values(metric, X))
            coef = weighted_least_squares(X, Y, values, self.damping)
        state = dict(self.predictor_state_)
        for key, part in (("weight", coef[:, :-1]), ("bias", coef[:, -1])):
            (name,) = [k for k in state if k.endswith(key)]
            state[name] = part.numpy().astype(state[name].dtype)
        self.predictor_state_ = state
        return self


class _AveragingSolver(ClosedFormBilevelSolver):
    """Closed-form solver whose kept predictor is an exponential average of the iterates.

    Each step's exact inner solution enters ``theta`` with weight ``1 - decay`` (the first
    one with weight 1); the steps themselves use the fresh solution, so only what is
    validated, kept and returned is averaged over the trajectory.
    """

    decay = 0.9
    _started = False  # whether theta holds an iterate yet (it starts at the initial weights)

    def outer_step(self, X, Y, X_train_flat, batch_size, n_inner):
        previous = self.theta.clone()
        task, mse, ok = super().outer_step(X, Y, X_train_flat, batch_size, n_inner)
        if ok and self._started:
            self.theta.mul_(1 - self.decay).add_(previous, alpha=self.decay)
        self._started = self._started or ok
        return task, mse, ok


def averaged_iterates(decay):
    """A ``TaskMetRegressor`` subclass whose closed-form fit averages the predictor iterates."""

    class AveragedIterates(TaskMetRegressor):
        def fit(self, X, y, groups=None):
            solver = type("Solver", (_AveragingSolver,), {"decay": decay})
            original = taskmet_estimator.ClosedFormBilevelSolver
            taskmet_estimator.ClosedFormBilevelSolver = solver
            try:
                return super().fit(X, y, groups)
            finally:
                taskmet_estimator.ClosedFormBilevelSolver = original

    return AveragedIterates


class MetricEnsemble:
    """The mean prediction of fits of ``build`` with seeds ``seed + 1000 k``, k < size."""

    def __init__(self, build, seed, n_train, make_task, size=3):
        self.models = [build(seed + 1000 * k, n_train, make_task) for k in range(size)]

    def fit(self, X, y):
        for model in self.models:
            model.fit(X, y)
        return self

    def predict(self, X):
        return np.mean([model.predict(X) for model in self.models], axis=0)


def ensemble_of(build):
    return lambda seed, n_train, make_task=shortest_path_task: MetricEnsemble(
        build, seed, n_train, make_task
    )


class IndependentBatches:
    """The batch rule before random reshuffling: ``size`` distinct instances drawn anew at
    every step (the ``size`` smallest of ``n_inst`` uniform keys), with no epochs."""

    def __init__(self, generator):
        self.generator = generator

    def __call__(self, n_inst, size, device):
        keys = torch.rand(n_inst, generator=self.generator, device=device)
        return torch.topk(keys, min(size, n_inst), largest=False).indices


@contextlib.contextmanager
def independent_batches():
    """Within the block, TaskMet's outer batches and DFL's batches are independent draws."""
    originals = bilevel.ReshuffledBatches, dfl_module.ReshuffledBatches
    bilevel.ReshuffledBatches = dfl_module.ReshuffledBatches = IndependentBatches
    try:
        yield
    finally:
        bilevel.ReshuffledBatches, dfl_module.ReshuffledBatches = originals


class WithIndependentBatches:
    """``model`` fitted with :func:`independent_batches`; other attributes pass through."""

    def __init__(self, model):
        self.model = model

    def fit(self, X, y):
        with independent_batches():
            self.model.fit(X, y)
        return self

    def __getattr__(self, name):
        return getattr(self.__dict__["model"], name)


def with_independent_batches(build):
    return lambda seed, n_train, make_task=shortest_path_task: WithIndependentBatches(
        build(seed, n_train, make_task)
    )


def closed_form(
    metric,
    surrogate="spo+",
    validation_loss="task_loss",
    lr=1e-2,
    alpha=0.0,
    hidden=(200,),
    batch_size=50,
    estimator=TaskMetRegressor,
    make_task=shortest_path_task,
    max_iter=200,
    n_samples=3,
    sigma=1.0,
    validation_fraction=0.1,
):
    """Builder ``(seed, n_train[, make_task]) -> TaskMetRegressor``, closed-form inner solve.

    ``make_task(surrogate=..., n_samples=..., sigma=...)`` makes the decision task
    (PyEPO's 5 x 5 shortest path by default; the builder's third argument overrides it).
    """
    default_task = make_task

    def build(seed, n_train, make_task=default_task):
        return estimator(
            make_task(surrogate=surrogate, n_samples=n_samples, sigma=sigma),
            metric=metric,
            inner_solver="closed_form",
            alpha=alpha,
            metric_hidden_layer_sizes=hidden,
            learning_rate=lr,
            batch_size=batch_size,
            max_iter=max_iter,
            validation_loss=validation_loss,
            validation_fraction=validation_fraction,
            device="cpu",
            random_state=seed,
        )

    return build


def no_validation(config, max_iter, **changes):
    """``closed_form(**config)`` with ``changes`` and no validation split: every training
    instance in the fit, the last of ``max_iter`` outer steps kept (the ``-noval*`` names)."""
    return closed_form(**{**config, **changes}, validation_fraction=None, max_iter=max_iter)


# The configuration recommended by this study (``cf-diag-h64-a0.03``): a conditional
# diagonal metric from a 64-unit network, Adam 2e-2, alpha = 0.03, 200 outer steps, SPO+.
# Since batches come by random reshuffling, the recommendation also drops the validation
# split and keeps the last iterate: of 800 outer steps on the shortest path
# (``cf-diag-h64-a0.03-noval800``), of 300 on the knapsack
# (``cf-diag-h64-a0.01-pfyl-s10-noval300``). The names without ``-noval`` keep their
# meaning, for the logs.
RECOMMENDED = dict(metric="conditional_diagonal", alpha=0.03, lr=2e-2, hidden=(64,))
# On the knapsack, whose costs are larger (``cf-diag-h64-a0.01-pfyl-s10``): alpha = 0.01 and
# PFYL with 10 perturbation samples as the outer loss. The knapsack's recommendation mixes
# SPO+ into it, 0.8 PFYL + 0.2 SPO+ (``cf-diag-h64-a0.01-pfyl0.8-spo-s10-noval300``): the
# same regret with less spread over draws at degree 6. The names keep their meaning, for
# the logs.
RECOMMENDED_KNAPSACK = {**RECOMMENDED, "alpha": 0.01, "surrogate": "pfyl", "n_samples": 10}


def pfyl_with_spo_plus(pfyl_weight):
    """The task's ``surrogate`` mixing the two outer losses: ``w`` PFYL + ``(1 - w)`` SPO+."""
    return {"pfyl": pfyl_weight, "spo+": round(1 - pfyl_weight, 6)}


# Both, by method name: the variants below that change one thing in each.
_RECOMMENDED_BY_NAME = (
    ("cf-diag-h64-a0.03", RECOMMENDED),
    ("cf-diag-h64-a0.01-pfyl-s10", RECOMMENDED_KNAPSACK),
)

METHODS = {
    "ls": lambda seed, n_train, make_task=None: LinearRegression(),
    "dfl": dfl,
    **{f"dfl-a{alpha:g}": dfl_with_mse(alpha) for alpha in (0.001, 0.003, 0.01, 0.03, 0.1)},
    **{
        f"dfl-pfyl-a{alpha:g}": dfl_with_mse(alpha, "pfyl")
        for alpha in (0.0, 0.003, 0.01, 0.03, 0.1)
    },
    "tm-before": taskmet_before,
    "tm-default": taskmet_default,
    "cf-full": closed_form("conditional_full"),
    "cf-full-dl": closed_form("conditional_full", validation_loss="decision_loss"),
    "cf-diag": closed_form("conditional_diagonal"),
    "cf-diag-dl": closed_form("conditional_diagonal", validation_loss="decision_loss"),
    "cf-diag-pfyl": closed_form("conditional_diagonal", surrogate="pfyl"),
    "cf-diag-pfyl-dl": closed_form(
        "conditional_diagonal", surrogate="pfyl", validation_loss="decision_loss"
    ),
    "cf-diag-lr3e-2-dl": closed_form(
        "conditional_diagonal", validation_loss="decision_loss", lr=3e-2
    ),
    "cf-diag-a0.01": closed_form("conditional_diagonal", alpha=0.01),
    "cf-diag-a0.03": closed_form("conditional_diagonal", alpha=0.03),
    "cf-diag-h64-a0.01": closed_form("conditional_diagonal", alpha=0.01, lr=2e-2, hidden=(64,)),
    "cf-diag-h64-a0.03": closed_form(**RECOMMENDED),
    "cf-diag-h64-a0.03-b100": closed_form(**RECOMMENDED, batch_size=100),
    "cf-diag-h64-a0.03-b200": closed_form(**RECOMMENDED, batch_size=200),
    "cf-diag-h64-a0.01-b100": closed_form(**{**RECOMMENDED, "alpha": 0.01}, batch_size=100),
    "cf-diag-h64-a0.01-b200": closed_form(**{**RECOMMENDED, "alpha": 0.01}, batch_size=200),
    "cf-diag-h64-a0.03-ls-start": closed_form(
        "conditional_diagonal", alpha=0.03, lr=2e-2, hidden=(64,), estimator=TwoStageStart
    ),
    **{
        f"cf-diag-h64-a{alpha:g}-pfyl": closed_form(
            **{**RECOMMENDED, "alpha": alpha}, surrogate="pfyl"
        )
        for alpha in (0.001, 0.003, 0.01, 0.03)
    },
    **{
        f"cf-diag-h64-a{alpha:g}-pfyl-s{n}": closed_form(
            **{**RECOMMENDED, "alpha": alpha}, surrogate="pfyl", n_samples=n
        )
        for alpha in (0.01, 0.003)
        for n in (10, 30)
    },
    **{
        f"{name}-avg{decay:g}": closed_form(**config, estimator=averaged_iterates(decay))
        for name, config in _RECOMMENDED_BY_NAME
        for decay in (0.9, 0.97)
    },
    "cf-diag-h64-a0.01-pfyl-s10-b200": closed_form(**RECOMMENDED_KNAPSACK, batch_size=200),
    **{
        f"cf-diag-h64-a{alpha:g}-it{n}": closed_form(**{**RECOMMENDED, "alpha": alpha}, max_iter=n)
        for alpha in (0.03, 0.01)
        for n in (400, 800)
    },
    **{
        f"cf-diag-h64-a{alpha:g}-refit": closed_form(
            **{**RECOMMENDED, "alpha": alpha}, estimator=RefitOnAll
        )
        for alpha in (0.03, 0.01)
    },
    **{
        f"cf-diag-h64-a{alpha:g}-ens3": ensemble_of(closed_form(**{**RECOMMENDED, "alpha": alpha}))
        for alpha in (0.03, 0.01)
    },
    "cf-diag-a0.01-dl": closed_form(
        "conditional_diagonal", alpha=0.01, validation_loss="decision_loss"
    ),
    **{f"dfl-dpor-a{alpha:g}": dfl_with_mse(alpha, "dpo-regret") for alpha in (0.0, 0.01, 0.03)},
    **{
        f"cf-diag-h64-a{alpha:g}-dpor-sg{sigma:g}": closed_form(
            **{**RECOMMENDED, "alpha": alpha}, surrogate="dpo-regret", n_samples=10, sigma=sigma
        )
        for alpha in (0.0, 0.001, 0.003, 0.01, 0.03)
        for sigma in (0.5, 1.0, 2.0)
    },
    **{
        f"{name}-noval{n}": no_validation(config, n)
        for name, config in _RECOMMENDED_BY_NAME
        for n in (100, 200, 300, 500, 800, 3000, 8000)
    },
    **{
        f"{name}-noval300-lr{lr:g}": no_validation(config, 300, lr=lr)
        for name, config in _RECOMMENDED_BY_NAME
        for lr in (1e-2, 4e-2)
    },
    **{
        f"cf-diag-h64-a{alpha:g}-noval{n}": no_validation(RECOMMENDED, n, alpha=alpha)
        for alpha in (0.003, 0.01, 0.02)
        for n in (300, 800)
    },
    **{
        f"cf-diag-h64-a{alpha:g}-pfyl-s10-noval300": no_validation(
            RECOMMENDED_KNAPSACK, 300, alpha=alpha
        )
        for alpha in (0.003, 0.005, 0.02)
    },
    **{
        f"cf-diag-h64-rel{alpha:g}-noval800": no_validation(
            RECOMMENDED, 800, alpha=alpha, estimator=RelativeAlpha
        )
        for alpha in (0.005, 0.01)
    },
    **{
        f"cf-diag-h64-rel{alpha:g}-pfyl-s10-noval300": no_validation(
            RECOMMENDED_KNAPSACK, 300, alpha=alpha, estimator=RelativeAlpha
        )
        for alpha in (0.05, 0.1)
    },
    **{
        f"cf-diag-h64-a0.01-pfyl-s10-sg{sigma:g}-noval300": no_validation(
            RECOMMENDED_KNAPSACK, 300, sigma=sigma
        )
        for sigma in (0.5, 2.0)
    },
    "cf-diag-h64-a0.01-pfyl-s10-noval300-b100": no_validation(
        RECOMMENDED_KNAPSACK, 300, batch_size=100
    ),
    **{
        f"cf-diag-h64-a0.01-pfyl{w:g}-spo-s10-noval300": no_validation(
            RECOMMENDED_KNAPSACK, 300, surrogate=pfyl_with_spo_plus(w)
        )
        for w in (0.5, 0.67, 0.8)
    },
    **{
        f"cf-diag-h64-a0.01-pfyl0.8-spo-s10-noval{n}": no_validation(
            RECOMMENDED_KNAPSACK, n, surrogate=pfyl_with_spo_plus(0.8)
        )
        for n in (600, 800)
    },
    **{
        f"cf-diag-h64-a{alpha:g}-pfyl0.8-spo-s10-noval300": no_validation(
            RECOMMENDED_KNAPSACK, 300, alpha=alpha, surrogate=pfyl_with_spo_plus(0.8)
        )
        for alpha in (0.005, 0.007)
    },
    "dfl-iid": with_independent_batches(dfl),
    **{
        f"{name}-iid": with_independent_batches(closed_form(**config))
        for name, config in _RECOMMENDED_BY_NAME
    },
}


def normalized_regret(task, y_pred, y_true):
    pred = torch.as_tensor(np.asarray(y_pred, dtype=np.float64)).unsqueeze(1)
    true = torch.as_tensor(np.asarray(y_true, dtype=np.float64)).unsqueeze(1)
    return 100 * task.normalized_regret(pred, true)


def problem_data(problem, n, degree, seed, dtype=np.float32):
    """PyEPO's data in ``dtype``, the task factory and the item weights of ``problem``.

    Returns ``X, y, make_task, weights``; ``weights`` (the knapsack's, shape (1, n_items))
    is None for the shortest path.
    """
    weights = None
    if problem == "shortest_path":
        X, y = make_shortest_path(n, FEATURES, GRID, degree, NOISE, random_state=seed)
        make_task = shortest_path_task
    else:
        X, y, weights = make_knapsack(
            n, FEATURES, KNAPSACK_ITEMS, 1, degree, NOISE, random_state=seed
        )

        def make_task(**options):
            return Knapsack(weights[0], KNAPSACK_CAPACITY, **options)

    return X.astype(dtype), y.astype(dtype), make_task, weights


def data_draws(args):
    """``(seed, degree, (X_tr, y_tr, X_te, y_te), make_task)`` of every draw, seeds outside."""
    for seed in args.seeds:
        for degree in args.degrees:
            X, y, make_task, _ = problem_data(
                args.problem, args.n_train + args.n_test, degree, seed
            )
            n = args.n_train
            yield seed, degree, (X[:n], y[:n], X[n:], y[n:]), make_task


def run_one(name, seed, X_tr, y_tr, X_te, y_te, make_task):
    """Fit method ``name`` with model seed ``seed``; its test figures."""
    model = METHODS[name](seed, X_tr.shape[0], make_task)
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(X_tr, y_tr)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    pred = model.predict(X_te)
    figures = {
        "regret": normalized_regret(make_task(), pred, y_te),
        "mse": float(((pred - y_te) ** 2).mean()),
        "cpu": cpu,
        "wall": wall,
    }
    if hasattr(model, "n_iter_"):
        figures["iters"] = f"{model.n_iter_} (best {model.best_iteration_})"
    return figures


def summarise(results, methods, degrees):
    print("\nmean +- std over seeds; regret and MSE on the test set, CPU s of one fit")
    width = max(18, *(len(name) + 1 for name in methods))
    header = "method".ljust(width) + "".join(
        f"| deg {d} regret %   MSE          CPU s     " for d in degrees
    )
    print(header)
    for name in methods:
        cells = []
        for d in degrees:
            runs = results[(name, d)]
            if not runs:
                cells.append(" " * 42)
                continue
            stat = {
                k: (np.mean([r[k] for r in runs]), np.std([r[k] for r in runs]))
                for k in runs[0]
                if k != "iters"
            }
            cells.append(
                f"| {stat['regret'][0]:5.2f} +- {stat['regret'][1]:4.2f}  "
                f"{stat['mse'][0]:5.3f} +- {stat['mse'][1]:5.3f}  {stat['cpu'][0]:7.1f}  "
            )
        print(f"{name:<{width}}" + "".join(cells))


def model_seed_spread(args, results):
    """Refit every method with ``args.model_seeds - 1`` more model seeds on each data draw.

    Prints, per method and degree, the regret's standard deviation (ddof = 1) over model
    seeds on one draw, averaged over the draws, and the mean regret of all the fits.
    """
    spread = {}
    for seed, degree, data, make_task in data_draws(args):
        for name in args.methods:
            regrets = [results[(name, degree)][args.seeds.index(seed)]["regret"]]
            for k in range(1, args.model_seeds):
                regrets.append(run_one(name, seed + 1000 * k, *data, make_task)["regret"])
            print(
                f"  deg {degree} seed {seed} {name:<18} regret over model seeds "
                + " ".join(f"{r:.2f}" for r in regrets),
                flush=True,
            )
            spread.setdefault((name, degree), []).append(regrets)
    print(f"\nspread over {args.model_seeds} model seeds on one data draw (mean over draws)")
    width = max(len(name) for name in args.methods) + 1
    for name in args.methods:
        cells = []
        for degree in args.degrees:
            draws = np.array(spread[(name, degree)])
            cells.append(
                f"| deg {degree}: sd {draws.std(axis=1, ddof=1).mean():4.2f}, "
                f"mean regret {draws.mean():5.2f}  "
            )
        print(f"  {name:<{width}}" + "".join(cells))


def timing(problem, methods, degree, seed, n_train, n_test, repeats):
    """CPU time of each method's fit, ``repeats`` times interleaved: min and median."""
    X, y, make_task, _ = problem_data(problem, n_train + n_test, degree, seed)
    X, y = X[:n_train], y[:n_train]
    times = {name: [] for name in methods}
    for _ in range(repeats):
        for name in methods:
            model = METHODS[name](seed, n_train, make_task)
            cpu = time.process_time()
            model.fit(X, y)
            times[name].append(time.process_time() - cpu)
    print(f"\nfit CPU time, degree {degree} seed {seed}, {repeats} interleaved repeats (s):")
    reference = min(times["dfl"]) if "dfl" in times else None
    for name, values in times.items():
        ratio = f"  ({min(values) / reference:.2f}x dfl)" if reference else ""
        print(f"  {name:<18} min {min(values):.2f}  median {np.median(values):.2f}{ratio}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", choices=["shortest_path", "knapsack"], default="shortest_path")
    parser.add_argument("--degrees", type=int, nargs="+", default=[1, 6])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument(
        "--methods",
        nargs="+",
        # The slow default fits and the frontier sweep only when asked for.
        default=[
            m
            for m in METHODS
            if not m.startswith(("tm-", "dfl-a", "dfl-pfyl"))
            and "-dpor" not in m
            and "-noval" not in m
        ],
        choices=list(METHODS),
    )
    parser.add_argument(
        "--model-seeds",
        type=int,
        default=1,
        help="fits per data draw, with other model seeds: the method's own spread",
    )
    parser.add_argument(
        "--timing-repeats",
        type=int,
        default=0,
        help="then time every method again on (last degree, first seed), interleaved",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    name = (
        f"shortest path {GRID[0]}x{GRID[1]}"
        if args.problem == "shortest_path"
        else f"knapsack {KNAPSACK_ITEMS} items, capacity {KNAPSACK_CAPACITY:g}"
    )
    print(
        f"{name}, {FEATURES} features, noise {NOISE}, "
        f"n={args.n_train}/{args.n_test}, degrees {args.degrees}, seeds {args.seeds}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread"
    )
    results = {(m, d): [] for m in args.methods for d in args.degrees}
    for seed, degree, data, make_task in data_draws(args):
        for name in args.methods:
            figures = run_one(name, seed, *data, make_task)
            results[(name, degree)].append(figures)
            extra = f", iterations {figures['iters']}" if "iters" in figures else ""
            print(
                f"  deg {degree} seed {seed} {name:<18} regret {figures['regret']:6.2f} %  "
                f"MSE {figures['mse']:.3f}  CPU {figures['cpu']:6.1f} s  "
                f"wall {figures['wall']:6.1f} s{extra}",
                flush=True,
            )
    summarise(results, args.methods, args.degrees)
    if args.model_seeds > 1:
        model_seed_spread(args, results)
    if args.timing_repeats:
        last = args.degrees[-1]
        timing(
            args.problem,
            args.methods,
            last,
            args.seeds[0],
            args.n_train,
            args.n_test,
            args.timing_repeats,
        )


if __name__ == "__main__":
    main()
