"""Gradient-based estimation of subset performance vs real fine-tuning, side by side.

On the multi-task digits problem (``sktaskmet.datasets.make_multitask_digits``: 12 tasks,
clean, noisy, duplicated and class-restricted, a held-out target task, an MLP with one
hidden layer of 256 tanh units (``--hidden``) pretrained on a separate split), the same subsets
(Bernoulli(0.5)) are

* fine-tuned for real: full-batch L-BFGS on all parameters from the pretrained weights,
  objective = weighted mean cross-entropy + penalty/2 ||theta - theta0||^2
  (``SubsetFineTuner`` through ``evaluate_subsets``), giving the target loss F(s);
* estimated by ``GradientSubsetEstimator`` (gradients once, random projection, one small
  penalised logistic problem per subset), giving F-hat(s), once with the fine-tuning
  penalty and once with a mismatched penalty.

It prints the mean relative error |F-hat - F| / |F|, the wall-clock times of both (the
estimation time includes computing the gradients), their ratio, and the held-out Spearman
correlation of a KernelSurrogate and a LinearSurrogate fitted on the estimated F-hat of the
training subsets against the true F of the held-out subsets.

With ``--linearised-floor`` it also fine-tunes the linearised model itself (all parameters,
no projection, the same L-BFGS as the real fine-tuning, through ``torch.func.jvp``): the
error of that exact linearised fine-tuning is the floor that no projection can go below.

Run::

    python benchmarks/bench_surrogate_gradient.py [--n-subsets 60] [--device cpu]
"""

import argparse
import copy
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from sktaskmet import GradientSubsetEstimator, KernelSurrogate, LinearSurrogate
from sktaskmet.datasets import make_multitask_digits
from sktaskmet.surrogate import SubsetFineTuner, evaluate_subsets, sample_subsets


class Linearised(torch.nn.Module):
    """The first-order Taylor model of ``model`` at its parameters, trainable in the change.

    ``forward(x) = f(x; theta0) + J(x) delta``, computed by ``torch.func.jvp``; the only
    parameters are ``delta`` (zero at start), so ``SubsetFineTuner`` fine-tunes exactly the
    linearised problem that ``GradientSubsetEstimator`` solves without projection.
    """

    def __init__(self, model):
        super().__init__()
        self.base = model
        self.names = [name for name, _ in model.named_parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        self.delta = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.zeros_like(p)) for p in model.parameters()]
        )

    def forward(self, x):
        def f(*params):
            named = dict(zip(self.names, params, strict=True))
            return torch.func.functional_call(self.base, named, (x,))

        theta0 = tuple(p.detach() for p in self.base.parameters())  # frozen: follows .to()
        out0, tangent = torch.func.jvp(f, theta0, tuple(self.delta))
        return out0 + tangent


def relative_error(F_hat, F):
    """Mean of |F-hat - F| / |F| over the subsets (0.01 is 1%)."""
    return float(np.mean(np.abs(F_hat - F) / np.abs(F)))


def estimate(data, S, penalty, args, projection_dim=None, seed=None):
    est = GradientSubsetEstimator(
        data.model,
        projection_dim=args.projection_dim if projection_dim is None else projection_dim,
        projection=args.projection,
        penalty=penalty,
        tol=args.tol,
        device=args.device,
        random_state=args.seed if seed is None else seed,
    )
    start = time.perf_counter()
    est.fit(data.X, data.y, tasks=data.tasks, X_target=data.X_target, y_target=data.y_target)
    F_hat = est.estimate(S)  # numpy result: the device work has finished
    return F_hat, time.perf_counter() - start, est


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-subsets", type=int, default=60)
    parser.add_argument("--projection-dim", type=int, default=400)
    parser.add_argument("--projection", default="rademacher")
    parser.add_argument("--hidden", type=int, default=256, help="hidden units of the MLP")
    parser.add_argument("--tol", type=float, default=1e-9, help="Newton tolerance (objective)")
    parser.add_argument("--penalty", type=float, default=0.1)
    parser.add_argument("--mismatched-penalty", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=2, help="estimation repeats (best)")
    parser.add_argument("--n-jobs", type=int, default=None, help="workers for retraining")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (both sides)")
    parser.add_argument(
        "--sweep-projection-dims",
        type=int,
        nargs="*",
        default=[],
        help="projection dimensions whose error (matched penalty) is reported",
    )
    parser.add_argument(
        "--sweep-seeds",
        type=int,
        default=1,
        help="projections drawn per swept dimension (seeds seed, seed + 1, ...)",
    )
    parser.add_argument(
        "--linearised-floor",
        action="store_true",
        help="also fine-tune the exact linearised model (error floor of any projection)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = make_multitask_digits(random_state=args.seed, hidden_layer_sizes=(args.hidden,))
    n_tasks = len(data.task_kinds)
    S = sample_subsets(n_tasks, args.n_subsets, p=0.5, random_state=args.seed + 1)
    n_params = sum(p.numel() for p in data.model.parameters())
    print(
        f"multi-task digits: {n_tasks} tasks ({', '.join(data.task_kinds)}), "
        f"{len(data.y)} training and {len(data.y_target)} target examples, "
        f"MLP with {n_params} parameters; {args.n_subsets} subsets ~ Bernoulli(0.5); "
        f"device={args.device}, torch threads={torch.get_num_threads()}"
    )

    def fine_tuner(model):
        return SubsetFineTuner(
            model,
            data.X,
            data.y,
            data.tasks,
            data.X_target,
            data.y_target,
            penalty=args.penalty,
            device=args.device,
        )

    tuner = fine_tuner(data.model)
    start = time.perf_counter()
    F = evaluate_subsets(tuner, S, n_jobs=args.n_jobs)
    retrain_time = time.perf_counter() - start
    print(
        f"real fine-tuning: {retrain_time:.1f} s for {args.n_subsets} subsets "
        f"({retrain_time / args.n_subsets:.2f} s each); F in [{F.min():.3f}, {F.max():.3f}], "
        f"pretrained target loss {tuner(np.zeros(n_tasks)):.3f}"
    )

    if args.linearised_floor:
        linear_tuner = fine_tuner(Linearised(copy.deepcopy(data.model)))
        start = time.perf_counter()
        F_lin = evaluate_subsets(linear_tuner, S, n_jobs=args.n_jobs)
        floor = relative_error(F_lin, F)
        print(
            f"exact linearised fine-tuning (no projection, L-BFGS): relative error "
            f"{100 * floor:.2f}% ({time.perf_counter() - start:.1f} s)"
        )

    rows = []
    for label, penalty in [
        ("matched", args.penalty),
        ("mismatched", args.mismatched_penalty),
    ]:
        best, times = np.inf, []
        for _ in range(args.repeats):
            F_hat, elapsed, est = estimate(data, S, penalty, args)
            times.append(elapsed)
            if elapsed < best:
                best, best_fit = elapsed, est.fit_time_
        error = relative_error(F_hat, F)
        rows.append((label, penalty, error, best, F_hat, best_fit, float(np.median(times))))
        print(
            f"gradient estimate, {label} penalty {penalty:g} (fine-tuning {args.penalty:g}), "
            f"projection={args.projection!r}, projection_dim={args.projection_dim}: "
            f"relative error {100 * error:.2f}%, "
            f"time {best:.2f} s (best of {args.repeats}, median {np.median(times):.2f} s; "
            f"of which gradients {best_fit:.2f} s)"
        )
    matched_time, gradient_time, median_time = rows[0][3], rows[0][5], rows[0][6]
    print(
        f"speed-up over retraining the same {args.n_subsets} subsets: "
        f"{retrain_time / matched_time:.1f}x ({retrain_time:.1f} s / {matched_time:.2f} s; "
        f"{retrain_time / median_time:.1f}x with the median estimation time); "
        f"per additional subset (gradients excluded): "
        f"{retrain_time / (matched_time - gradient_time):.1f}x"
    )

    for dim in args.sweep_projection_dims:
        errors, times = [], []
        for seed in range(args.seed, args.seed + args.sweep_seeds):
            F_dim, elapsed, _ = estimate(data, S, args.penalty, args, dim, seed)
            errors.append(100 * relative_error(F_dim, F))
            times.append(elapsed)
        print(
            f"gradient estimate, matched penalty, projection={args.projection!r}, "
            f"projection_dim={dim}, {len(errors)} projection seed(s): relative error "
            f"{', '.join(f'{e:.2f}%' for e in errors)} (mean {np.mean(errors):.2f}%), "
            f"time {np.median(times):.2f} s (median)"
        )

    # Surrogates fitted on estimated F-hat, judged on held-out true F.
    F_hat = rows[0][4]
    n_train = int(0.75 * args.n_subsets)
    for name, surrogate in [
        ("KernelSurrogate", KernelSurrogate(cv=5, device=args.device)),
        ("LinearSurrogate", LinearSurrogate(cv=5, device=args.device)),
    ]:
        surrogate.fit(S[:n_train], F_hat[:n_train])
        rho = spearmanr(surrogate.predict(S[n_train:]), F[n_train:]).statistic
        print(
            f"{name} fitted on F-hat of {n_train} subsets: held-out Spearman vs true F on "
            f"{args.n_subsets - n_train} subsets = {rho:.3f}"
        )


if __name__ == "__main__":
    main()
