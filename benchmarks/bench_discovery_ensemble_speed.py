"""Speed of one vmapped ensemble against training the same networks one by one.

64 labelings of sklearn digits x 2 networks (MLP 64-128-128-2, Adam 1e-3, batch 100, float32
unless ``--dtype float64``, 1200 training points) are trained

* as one ensemble: parameters stacked with torch.func.stack_module_state and one vmapped
  functional forward/backward per step (what AgreementScorer does);
* one by one: 128 ``torch.nn.Sequential`` networks, each with its own ``torch.optim.Adam``,
  in a Python loop (the usual way).

Both see the same initial weights and the same minibatches for the same number of epochs;
the script checks that they end with the same parameters (up to float32 round-off) and
prints the time of each and their ratio (best of ``--repeats``).

Run::

    python benchmarks/bench_discovery_ensemble_speed.py [--epochs 3] [--device cpu]
"""

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from sktaskmet._backend import resolve_device, seeded
from sktaskmet._nn import make_mlp
from sktaskmet.datasets import make_random_labelings
from sktaskmet.discovery._ensemble import MLPEnsemble, batch_schedule, train_ensemble

HIDDEN = (128, 128)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_ensemble(X, targets, seeds, n_models, epochs, device):
    """Train all members as one ensemble; returns (seconds, ensemble, batches used)."""
    n_members = len(seeds)
    synchronize(device)
    start = time.perf_counter()
    ensemble = MLPEnsemble(X.shape[1], HIDDEN, 2, seeds, dtype=X.dtype, device=device)
    schedule = batch_schedule(
        len(X), n_models, n_members, 100, "same", torch.Generator(device).manual_seed(0), device
    )
    used = []

    def recorded():
        used.append(schedule())
        return used[-1]

    task_of_member = torch.arange(n_members, device=device) // n_models
    train_ensemble(ensemble, X, targets, task_of_member, recorded, epochs, 1e-3)
    synchronize(device)
    return time.perf_counter() - start, ensemble, used


def run_one_by_one(X, targets, seeds, n_models, batches, device):
    """Train the same networks on the same batches, one after the other."""
    synchronize(device)
    start = time.perf_counter()
    networks = []
    for member, seed in enumerate(seeds):
        with seeded(seed):
            net = make_mlp(X.shape[1], HIDDEN, 2)
        net = net.to(device=device, dtype=X.dtype)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        labels = targets[:, member // n_models]
        for epoch in batches:
            for batch in epoch:
                rows = batch[member]
                loss = torch.nn.functional.cross_entropy(net(X[rows]), labels[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        networks.append(net)
    synchronize(device)
    return time.perf_counter() - start, networks


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-labelings", type=int, default=64)
    parser.add_argument("--n-models", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float64"],
        help="float64 shows that a parameter gap on a GPU is round-off (batched and single "
        "matrix products sum in different orders, and Adam's normalised step amplifies it)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    X, _ = load_digits(return_X_y=True)
    X = torch.as_tensor((X[:1200] / 16.0).astype(args.dtype), device=device)
    targets = torch.as_tensor(
        make_random_labelings(1200, args.n_labelings, random_state=0), device=device
    )
    seeds = list(range(args.n_models)) * args.n_labelings
    n_networks = len(seeds)
    steps = args.epochs * int(np.ceil(1200 / 100))
    print(
        f"{args.n_labelings} labelings x {args.n_models} networks = {n_networks} MLPs "
        f"64-128-128-2, {args.epochs} epochs x 12 steps, batch 100, {args.dtype}, device={device}, "
        f"torch threads={torch.get_num_threads()}"
    )
    # Warm-up (vmap tracing, allocator) outside the timings.
    run_ensemble(X[:200], targets[:200], seeds[:4], args.n_models, 1, device)

    ensemble_times, loop_times = [], []
    for _ in range(args.repeats):
        seconds, ensemble, batches = run_ensemble(
            X, targets, seeds, args.n_models, args.epochs, device
        )
        ensemble_times.append(seconds)
        seconds, networks = run_one_by_one(X, targets, seeds, args.n_models, batches, device)
        loop_times.append(seconds)
        print(f"  ensemble {ensemble_times[-1]:.2f} s   one by one {loop_times[-1]:.2f} s")

    diff = 0.0
    for member, net in enumerate(networks):
        for name, value in net.state_dict().items():
            gap = (ensemble.params[name][member].detach() - value).abs().max().item()
            diff = max(diff, gap)
    best_ensemble, best_loop = min(ensemble_times), min(loop_times)
    print(
        f"ensemble:   {best_ensemble:.2f} s ({1e3 * best_ensemble / steps:.1f} ms per step "
        f"for all {n_networks} networks)"
    )
    print(
        f"one by one: {best_loop:.2f} s ({1e3 * best_loop / steps / n_networks:.2f} ms per "
        "network-step)"
    )
    print(f"max |parameter difference| ensemble vs one by one: {diff:.2e}")
    ratio = best_loop / best_ensemble
    print(f"speed-up: {ratio:.1f}x (target >= 10x: {'met' if ratio >= 10 else 'MISSED'})")


if __name__ == "__main__":
    main()
