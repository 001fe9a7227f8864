"""Portfolio, budget-allocation and distractor-dimension experiments of TaskMet.

Three synthetic problems of the TaskMet paper, each over a few seeds:

* ``portfolio``: :func:`~sktaskmet.datasets.make_portfolio` (50 assets per day, factor
  model, polynomial signal of degree 4) with the Markowitz task
  :class:`~sktaskmet.tasks.Portfolio` (risk aversion 0.1, the generator's covariance);
* ``budget``: :func:`~sktaskmet.datasets.make_budget_allocation` (5 channels by 10
  targets) with :class:`~sktaskmet.tasks.BudgetAllocation` (budget 2);
* ``distractors``: :func:`~sktaskmet.datasets.make_cartpole_distractors` with
  :class:`~sktaskmet.tasks.StateReward`; TaskMet with a diagonal metric must put the
  largest weights on the reward-relevant dimensions (cart position and pole angle).

For the first two, the methods share the predictor class (``--predictor``): the MSE
baseline (least squares), DFL (task loss + ``alpha`` MSE, alpha = 1 as in the paper's
table) and TaskMet (conditional full metric, alpha = 0). Printed per method: normalised
test decision quality (1 = optimal decisions, 0 = random ones), test MSE and fit time.

Run::

    nice -n 10 python benchmarks/bench_taskmet_problems.py --seeds 0 1 2
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
from sklearn.linear_model import LinearRegression

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sktaskmet import DFLRegressor, TaskMetRegressor
from sktaskmet.datasets import make_budget_allocation, make_cartpole_distractors, make_portfolio
from sktaskmet.tasks import BudgetAllocation, Portfolio, StateReward

STATE_NAMES = ["x", "x_dot", "theta", "theta_dot"]


def normalized_dq(task, y_pred, y_true, n_items):
    n_outputs = 1 if np.ndim(y_true) == 1 else np.shape(y_true)[1]
    shape = (-1, n_items, n_outputs)
    return task.normalized_decision_quality(
        torch.as_tensor(y_pred).reshape(shape), torch.as_tensor(y_true).reshape(shape)
    )


def split(X, y, groups, n_train):
    train = groups < n_train
    return X[train], y[train], groups[train], X[~train], y[~train]


def problem_data(problem, seed):
    """Train/test data, the task and the number of items per instance."""
    if problem == "portfolio":
        n_train, n_test = 200, 200
        X, y, groups, cov = make_portfolio(
            n_days=n_train + n_test,
            n_assets=50,
            noise=1.0,
            return_covariance=True,
            random_state=seed,
        )
        return split(X, y, groups, n_train), Portfolio(risk_aversion=0.1, covariance=cov), 50
    n_train, n_test = 200, 200
    X, y, groups = make_budget_allocation(n_instances=n_train + n_test, random_state=seed)
    return split(X, y, groups, n_train), BudgetAllocation(budget=2.0), 5


def run_decision_problem(problem, seed, args):
    (X, y, groups, X_test, y_test), task, n_items = problem_data(problem, seed)
    common = dict(
        predictor=args.predictor,
        hidden_layer_sizes=(32,),
        validation_fraction=0.2,
        n_iter_no_change=args.patience,
        validation_interval=10,
        max_iter=args.max_iter,
        device=args.device,
        random_state=seed,
    )
    models = {
        # Least squares with the same predictor class (exact for the linear one).
        # (for the MLP: Adam on the squared error with as many steps as TaskMet's inner
        # solver takes in total).
        "MSE": LinearRegression()
        if args.predictor == "linear"
        else DFLRegressor(
            None,
            learning_rate=args.inner_lr,
            batch_size=10,
            **{**common, "max_iter": args.inner_steps_first + args.max_iter * args.inner_steps},
        ),
        "DFL alpha=1": DFLRegressor(
            task, alpha=1.0, learning_rate=args.dfl_lr, **{**common, "max_iter": args.dfl_max_iter}
        ),
        "TaskMet": TaskMetRegressor(
            task,
            metric="conditional_full",
            inner_lr=args.inner_lr,
            inner_steps_first=args.inner_steps_first,
            inner_steps=args.inner_steps,
            metric_hidden_layer_sizes=(64,),
            implicit_solver="normal_cg" if args.predictor == "mlp" else "cg",
            **common,
        ),
    }
    rows = {}
    for name, model in models.items():
        start = time.perf_counter()
        if isinstance(model, LinearRegression):
            model.fit(X, y)
        else:
            model.fit(X, y, groups=groups)
        elapsed = time.perf_counter() - start
        pred = model.predict(X_test)
        rows[name] = {
            "dq": normalized_dq(task, pred, y_test, n_items),
            "mse": float(np.mean((pred - y_test) ** 2)),
            "time": elapsed,
            "steps": int(getattr(model, "n_iter_", 0)),
        }
        print(
            f"{problem} seed {seed}  {name:12s} DQ {rows[name]['dq']:7.3f}  "
            f"MSE {rows[name]['mse']:8.4f}  {elapsed:6.1f} s  {rows[name]['steps']:4d} steps",
            flush=True,
        )
    return rows


def summarize_decision_problem(problem, results):
    print(f"\n{problem}: method       normalised test DQ   test MSE          time per run (s)")
    for name in results[0]:
        dq = np.array([r[name]["dq"] for r in results])
        mse = np.array([r[name]["mse"] for r in results])
        times = np.array([r[name]["time"] for r in results])
        print(
            f"{problem}: {name:12s} {dq.mean():6.3f} +- {dq.std():5.3f}    "
            f"{mse.mean():8.4f} +- {mse.std():6.4f}  {times.min():5.1f}-{times.max():5.1f}"
        )
    taskmet_dq = np.mean([r["TaskMet"]["dq"] for r in results])
    dfl_dq = np.mean([r["DFL alpha=1"]["dq"] for r in results])
    taskmet_mse = np.mean([r["TaskMet"]["mse"] for r in results])
    mse_mse = np.mean([r["MSE"]["mse"] for r in results])
    print(
        f"{problem}: target TaskMet DQ >= DFL DQ (means): {taskmet_dq >= dfl_dq} "
        f"({taskmet_dq:.3f} vs {dfl_dq:.3f})"
    )
    print(f"{problem}: TaskMet MSE / MSE-baseline MSE: {taskmet_mse / mse_mse:.3f}")


def run_distractors(seed, args):
    n_distractors = args.n_distractors
    X, y = make_cartpole_distractors(
        n_samples=args.n_transitions,
        n_distractors=n_distractors,
        distractor_correlation=args.distractor_correlation,
        random_state=seed,
    )
    task = StateReward(dims=(0, 2), scales=(2.4, 0.2095))
    model = TaskMetRegressor(
        task,
        predictor="mlp",
        hidden_layer_sizes=(args.distractor_hidden,),
        metric="diagonal",
        inner_lr=1e-2,
        inner_steps_first=args.inner_steps_first,
        inner_steps=args.inner_steps,
        implicit_solver=args.distractor_solver,
        damping=args.damping,
        learning_rate=args.metric_lr,
        batch_size=100,
        inner_batch_size=50,
        validation_fraction=0.2,
        n_iter_no_change=None,
        max_iter=args.distractor_max_iter,
        device=args.device,
        random_state=seed,
    )
    start = time.perf_counter()
    model.fit(X, y)
    elapsed = time.perf_counter() - start
    weights = np.diag(model.get_mahalanobis_matrix())
    names = STATE_NAMES + [f"d{i}" for i in range(n_distractors)]
    order = np.argsort(-weights)
    top_two = set(order[:2].tolist())
    success = top_two == {0, 2}
    ranking = ", ".join(f"{names[i]} {weights[i]:.3f}" for i in order[:6])
    print(
        f"distractors seed {seed}  {elapsed:6.1f} s  {model.n_iter_:4d} steps  top weights: "
        f"{ranking}  relevant dims first: {success}",
        flush=True,
    )
    return {"weights": weights, "success": success, "time": elapsed}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=["portfolio", "budget", "distractors"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--predictor", default="linear", choices=["linear", "mlp"])
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--patience", type=int, default=50)
    parser.add_argument("--inner-lr", type=float, default=0.01)
    parser.add_argument("--inner-steps-first", type=int, default=500)
    parser.add_argument("--inner-steps", type=int, default=50)
    parser.add_argument("--dfl-lr", type=float, default=5e-2)
    parser.add_argument("--dfl-max-iter", type=int, default=300)
    parser.add_argument("--metric-lr", type=float, default=5e-2)
    parser.add_argument("--n-transitions", type=int, default=2000)
    parser.add_argument("--n-distractors", type=int, default=10)
    parser.add_argument("--distractor-correlation", type=float, default=0.0)
    parser.add_argument("--distractor-hidden", type=int, default=32)
    parser.add_argument("--distractor-solver", default="normal_cg")
    parser.add_argument("--distractor-max-iter", type=int, default=150)
    parser.add_argument("--damping", type=float, default=1e-5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"device={args.device} threads={torch.get_num_threads()} seeds={args.seeds} "
        f"predictor={args.predictor} max_iter={args.max_iter}"
    )
    for problem in args.problems:
        if problem == "distractors":
            results = [run_distractors(seed, args) for seed in args.seeds]
            mean = np.mean([r["weights"] for r in results], axis=0)
            names = STATE_NAMES + [f"d{i}" for i in range(args.n_distractors)]
            print("\ndistractors: mean learned diagonal of Lambda (normalised to mean 1):")
            print(
                "distractors: "
                + ", ".join(f"{n} {w:.3f}" for n, w in zip(names, mean, strict=True))
            )
            n_ok = sum(r["success"] for r in results)
            print(
                f"distractors: target relevant dims (x, theta) ranked first: "
                f"{n_ok}/{len(results)} seeds"
            )
        else:
            results = [run_decision_problem(problem, seed, args) for seed in args.seeds]
            summarize_decision_problem(problem, results)


if __name__ == "__main__":
    main()
