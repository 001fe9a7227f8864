"""Gradient-based estimation of subset performance without retraining."""

import copy
import math
import time
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from joblib import delayed
from sklearn.base import BaseEstimator, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_array, column_or_1d, metadata_routing
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .._backend import make_generator, resolve_device, to_numpy, to_tensor, torch_dtype
from .._progress import LoopProgress, streaming_parallel
from .._training import CallbackSupportMixin, FitCallbacks
from .._validation import check_allocation, fit_guard
from ..exceptions import NonFiniteWarning
from ._hessians import pretrained_eigenbasis, task_hessians
from ._indicators import check_subset_weights
from ._influence import task_influence
from ._jacobians import output_jacobians, trainable_parameters
from ._linearized import target_losses
from ._losses import loss_targets, make_loss
from ._newton import solve_subsets
from ._projection import random_projection, row_space_basis

__all__ = ["GradientSubsetEstimator"]


class GradientSubsetEstimator(CallbackSupportMixin, BaseEstimator):
    r"""Estimate the performance of fine-tuning on any subset of tasks, without retraining.

    The model is linearised at its pretrained parameters :math:`\theta_0`,

    .. math:: f_\theta(x) \approx f_{\theta_0}(x) + J(x)\,(\theta - \theta_0),

    where :math:`J(x)` is the Jacobian of the model outputs (all logits for a classifier) with
    respect to its trainable parameters. :meth:`fit` computes :math:`J(x)` for every
    training and target example once, in chunks of ``batch_size`` examples, and projects it
    with a random matrix :math:`P` of shape
    ``(n_params, projection_dim)``, entries :math:`\pm 1/\sqrt{d}` or
    :math:`\mathcal{N}(0, 1/d)`, so that :math:`E[PP^\top] = I` and
    :math:`G(x) = J(x) P` preserves inner products of gradients in expectation.

    For a subset :math:`s \in [0, 1]^K` of the :math:`K` tasks, fine-tuning minimises the
    weighted mean training loss plus an L2 penalty that keeps the parameters near
    :math:`\theta_0`,

    .. math::

        \mathcal{L}_s(\theta) = \frac{\sum_i s_{t_i}\,\ell(f_\theta(x_i), y_i)}{\sum_i s_{t_i}}
        + \frac{\lambda}{2}\lVert \theta - \theta_0 \rVert^2 ,

    (:math:`t_i` is the task of example :math:`i`). :meth:`estimate` solves its linearised,
    projected counterpart

    .. math::

        \hat w_s = \arg\min_w \frac{\sum_i s_{t_i}\,
        \ell(f_{\theta_0}(x_i) + G(x_i) w,\ y_i)}{\sum_i s_{t_i}}
        + \frac{\lambda}{2} \lVert w \rVert^2

    (a multinomial logistic regression or a least-squares problem in ``projection_dim``
    dimensions, with the pretrained outputs as offsets) and returns the mean target loss of
    the linearised model,

    .. math:: \hat F(s) = \frac{1}{m} \sum_j \ell(f_{\theta_0}(x^{t}_j) + G(x^{t}_j)\hat w_s,\
        y^{t}_j) .

    Use the same ``penalty`` :math:`\lambda` as the fine-tuning whose outcome is estimated:
    the estimate is only as good as that match. An empty subset gives the pretrained
    target loss. Many subsets are solved together on ``device`` by a batched damped Newton
    method (see ``solver``).

    Parameters
    ----------
    model : torch.nn.Module
        The model at its pretrained parameters. It maps a batch of inputs ``X[i:j]`` to
        outputs of shape ``(j - i, n_outputs)`` (or ``(j - i,)`` for one output): logits for
        ``loss="cross_entropy"``. Parameters with ``requires_grad=False`` are treated as
        frozen. The model is copied; the original is never modified.
    loss : {"cross_entropy", "squared_error"} or callable, default="cross_entropy"
        Per-example loss :math:`\ell`. ``"cross_entropy"``: multinomial cross-entropy of the
        logits, targets are class indices. ``"squared_error"``: squared error summed over
        the outputs. A callable ``loss(outputs, y)`` receives outputs of shape
        ``(n, n_outputs)`` and the targets of those rows and returns the ``n`` per-example
        losses as a tensor; it must be twice differentiable with torch operations.
    projection_dim : int or None, default=200
        Dimension :math:`d` of the random projection of the gradients. ``None`` projects
        nothing away: exact linearised fine-tuning. The full Jacobians are then computed
        (memory grows with ``n_samples * n_outputs * n_params``) and, when the training
        examples have fewer output rows than the model has parameters, expressed in an
        orthonormal basis :math:`Q` of the span of the training Jacobian rows
        (``n_samples * n_outputs`` dimensions): the solution of every subset problem lies in
        that span, so nothing is lost, and the subset solves work in that smaller space.
    projection : {"rademacher", "gaussian", "sparse"}, default="rademacher"
        Distribution of the projection entries: dense :math:`\pm 1/\sqrt{d}` or
        :math:`\mathcal{N}(0, 1/d)`, or ``"sparse"``, a CountSketch (each parameter is added,
        with a random sign, to one random coordinate). All three satisfy
        :math:`E[PP^\top] = I`; the sparse one projects in ``n_params`` operations per
        output row instead of ``n_params * d``, which makes :meth:`fit` much cheaper for
        large models.
    penalty : float, default=1e-3
        L2 penalty :math:`\lambda` on the parameter change; match the fine-tuning penalty.
    solver : {"newton-cg", "newton"}, default="newton-cg"
        How each Newton direction of the subset solves is computed. ``"newton-cg"``:
        conjugate gradients on Hessian-vector products (``2 * n_samples * n_outputs * d``
        work each), preconditioned with the Hessian at the pretrained outputs, which
        :meth:`fit` precomputes per task so that a subset's Hessian there is a weighted sum
        of ``n_tasks`` small matrices (see ``preconditioner``). ``"newton"``: the Hessian is
        formed and factored at every iteration (``n_samples * n_outputs * d**2`` work per
        subset and iteration; fast on a GPU for small ``projection_dim``). Both reach the
        same minimiser.
    preconditioner : {"eigenbasis", "cholesky"}, default="eigenbasis"
        How ``solver="newton-cg"`` uses a subset's Hessian :math:`H_s` at the pretrained
        outputs. ``"eigenbasis"``: with :math:`U` the eigenvectors of the sum of the task
        Hessians (one ``d x d`` eigendecomposition per :meth:`estimate` call), the
        preconditioner is :math:`U\,\mathrm{diag}(U^\top H_s U + \lambda)^{-1} U^\top`;
        the diagonal of :math:`U^\top H_s U` is the same weighted sum of the tasks'
        diagonals, so each subset costs ``O(n_tasks * d)`` to set up and the whole batch two
        ``d x d`` matrix products per application. It is exact for subsets whose Hessian
        shares those eigenvectors (all tasks with equal weights) and close when the tasks
        are alike. ``"cholesky"``: the exact inverse of :math:`H_s + \lambda I`, a
        ``d**3`` factorisation and ``d**2`` numbers per subset, which can save
        conjugate-gradient iterations when the tasks' Hessians differ a lot. Both reach the
        same minimiser; only the work differs.
    max_iter : int, default=100
        Maximum Newton iterations per subset.
    tol : float, default=1e-12
        Stop a subset when half its squared Newton decrement (the predicted decrease of the
        objective) is below ``tol``, or below a few units in the last place of the
        objective in the working dtype.
    batch_size : int, default=128
        Examples per Jacobian computation in :meth:`fit`. When every trainable parameter is
        the weight or bias of a :class:`torch.nn.Linear` layer called once per forward pass
        (multi-layer perceptrons, a linear head on a frozen body), the Jacobians come in
        closed form: for a layer :math:`z = Wa + b`, the Jacobian of output :math:`c` with
        respect to :math:`W` is the outer product :math:`\delta_c a^\top` of the output
        gradient :math:`\delta_c = \partial f_c / \partial z` and the layer input, all
        taken from one batched forward pass and one backward pass per output; a dense
        projection is applied to the outer products without forming them (memory about
        ``batch_size * out_features * projection_dim`` numbers). Other models use
        ``torch.func.vmap`` over ``jacrev`` (memory about ``batch_size * n_outputs *
        n_params`` numbers). Either way the model must treat the examples of a batch
        independently, as in evaluation mode.
    subset_batch_size : int, default=256
        Subsets solved together in one batched Newton solve.
    n_jobs : int, default=None
        Number of joblib workers that solve batches of subsets in parallel (threads by
        default; a joblib backend set by ``joblib.parallel_config``, e.g. dask, takes over).
        ``None`` solves the batches one after the other on ``device``, which is the faster
        choice on a GPU.
    device : {"auto", "cpu", "cuda"}, str or torch.device, default="auto"
        Where the Jacobians and the subset solves are computed.
    random_state : int, RandomState instance or None, default=None
        Seeds the random projection.
    verbose : int, default=0
        Print the time of the Jacobian computation in :meth:`fit` and a line per batch of
        subsets solved in :meth:`estimate`. With scikit-learn >= 1.9, ``set_callbacks``
        (e.g. :class:`~sklearn.callback.ProgressBar`, also from a
        :class:`~sklearn.pipeline.Pipeline`) follows :meth:`fit` one batch of examples at
        a time; :meth:`estimate` draws a bar with ``progress=True``.

    ``penalty``, ``solver``, ``preconditioner``, ``max_iter``, ``tol``,
    ``subset_batch_size``, ``n_jobs`` and ``device`` are used by :meth:`estimate` only:
    changing them with ``set_params`` after :meth:`fit` takes effect without recomputing the
    gradients.

    Attributes
    ----------
    tasks_ : ndarray of shape (n_tasks,)
        The task labels; column ``k`` of a subset matrix ``S`` refers to ``tasks_[k]``.
    n_tasks_ : int
    task_sizes_ : ndarray of shape (n_tasks,)
        Number of training examples in each task.
    n_params_ : int
        Number of trainable parameters of the model.
    projection_dim_ : int
        Dimension of the projected gradients (``projection_dim`` in the shapes below). With
        ``projection_dim=None`` it is ``min(n_samples * n_outputs, n_params_)``, the
        dimension of the basis :math:`Q` (or of the parameters).
    n_outputs_ : int
        Number of model outputs (``n_outputs`` in the shapes below).
    train_outputs_ : ndarray of shape (n_samples, n_outputs)
        Pretrained outputs on the training examples.
    train_gradients_ : ndarray of shape (n_samples, n_outputs, projection_dim)
        Projected output Jacobians of the training examples, :math:`J(x) P` (:math:`J(x) Q`
        with ``projection_dim=None``).
    target_outputs_ : ndarray of shape (n_target, n_outputs)
    target_gradients_ : ndarray of shape (n_target, n_outputs, projection_dim)
    task_hessians_ : ndarray of shape (n_tasks, projection_dim, projection_dim)
        Per-task sums of projected Gauss-Newton terms at the pretrained outputs.
    pretrained_target_loss_ : float
        Mean target loss of the pretrained model: :math:`\hat F` of the empty subset.
    fit_time_ : float
        Seconds spent computing the gradients in :meth:`fit`.
    n_features_in_ : int
        Number of features (second dimension) of ``X``.

    Notes
    -----
    The per-subset problem is strongly convex for the built-in losses when ``penalty > 0``.
    The projection is of Johnson-Lindenstrauss type: with ``projection_dim=None`` the
    solution equals linearised fine-tuning of all parameters exactly; with a projection it
    equals the linearised fine-tuning whose neural tangent kernel :math:`J J^\top` is
    replaced by the unbiased estimate :math:`J P P^\top J^\top`.

    See Also
    --------
    KernelSurrogate : Fitted on the estimates, models subset performance with interactions.
    sktaskmet.surrogate.evaluate_subsets : Measures subset performance by real retraining.
    sktaskmet.surrogate.SubsetFineTuner : The fine-tuning whose outcome is estimated here.

    References
    ----------
    .. [1] Zhang, Duan and Zhang, "Efficient Estimation of Kernel Surrogate Models for Task
       Attribution", ICLR 2026.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sktaskmet import GradientSubsetEstimator
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(60, 4))
    >>> y = (X[:, 0] > 0).astype(int)
    >>> tasks = np.repeat([0, 1, 2], 20)
    >>> model = torch.nn.Linear(4, 2).double()
    >>> est = GradientSubsetEstimator(model, projection_dim=8, penalty=0.1, random_state=0)
    >>> est = est.fit(X, y, tasks=tasks, X_target=X[:10], y_target=y[:10])
    >>> est.estimate([[1, 1, 1], [1, 0, 0]]).shape
    (2,)
    """

    # tasks, X_target and y_target are required inputs of fit, not metadata to route.
    __metadata_request__fit = {
        "tasks": metadata_routing.UNUSED,
        "X_target": metadata_routing.UNUSED,
        "y_target": metadata_routing.UNUSED,
    }

    _parameter_constraints: dict = {
        "model": [torch.nn.Module],
        "loss": [StrOptions({"cross_entropy", "squared_error"}), callable],
        "projection_dim": [Interval(Integral, 1, None, closed="left"), None],
        "projection": [StrOptions({"rademacher", "gaussian", "sparse"})],
        "penalty": [Interval(Real, 0, None, closed="left")],
        "solver": [StrOptions({"newton-cg", "newton"})],
        "preconditioner": [StrOptions({"eigenbasis", "cholesky"})],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "subset_batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        model=None,
        *,
        loss="cross_entropy",
        projection_dim=200,
        projection="rademacher",
        penalty=1e-3,
        solver="newton-cg",
        preconditioner="eigenbasis",
        max_iter=100,
        tol=1e-12,
        batch_size=128,
        subset_batch_size=256,
        n_jobs=None,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.model = model
        self.loss = loss
        self.projection_dim = projection_dim
        self.projection = projection
        self.penalty = penalty
        self.solver = solver
        self.preconditioner = preconditioner
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.subset_batch_size = subset_batch_size
        self.n_jobs = n_jobs
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # fit needs a torch model shaped for the data, a task label per row and a target
        # set, which scikit-learn's generic checks cannot supply: tests/test_common.py lists
        # the checks that call fit(X, y), each with that reason, and runs the others.
        tags.input_tags.three_d_array = True
        return tags

    # ------------------------------------------------------------------ validation

    def _check_targets(self, y, n_rows, name, dtype):
        """Targets as a numpy array fit for the loss, with ``n_rows`` rows (floats in ``dtype``)."""
        if isinstance(self.loss, str) and self.loss == "cross_entropy":
            y = column_or_1d(y, warn=True)
            if y.dtype.kind == "f":
                if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                    raise ValueError(
                        f"{name} must hold integer class indices for loss='cross_entropy'."
                    )
            elif y.dtype.kind not in "iub":
                raise ValueError(
                    f"{name} must hold integer class indices for loss='cross_entropy'; got "
                    f"dtype {y.dtype}."
                )
            y = y.astype(np.int64)
        elif isinstance(self.loss, str):
            y = check_array(y, ensure_2d=False, dtype=dtype, input_name=name, ensure_min_samples=1)
        else:
            y = np.asarray(y)
            if y.dtype.kind == "f":
                y = y.astype(dtype, copy=False)
        if y.shape[0] != n_rows:
            raise ValueError(f"{name} has {y.shape[0]} rows, but the inputs have {n_rows}.")
        return y

    def _check_model_outputs(self, n_outputs, y, name):
        if isinstance(self.loss, str) and self.loss == "cross_entropy":
            if n_outputs < 2:
                raise ValueError(
                    f"loss='cross_entropy' needs a model with at least 2 outputs (logits); "
                    f"the model has {n_outputs}."
                )
            if y.min() < 0 or y.max() >= n_outputs:
                raise ValueError(
                    f"{name} holds class indices in [{y.min()}, {y.max()}], but the model has "
                    f"{n_outputs} outputs: classes must lie in [0, {n_outputs - 1}]."
                )
        elif isinstance(self.loss, str):
            width = 1 if y.ndim == 1 else y.shape[1]
            if width != n_outputs:
                raise ValueError(
                    f"{name} has {width} column(s), but the model has {n_outputs} output(s); "
                    "loss='squared_error' compares them one to one."
                )

    # ------------------------------------------------------------------ fit

    @fit_guard
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, *, tasks, X_target, y_target):
        """Compute the projected gradients of the training and target examples.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Training inputs of all tasks, in the form the model takes (float32 or float64;
            the model is run in the dtype of ``X``).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Training targets: class indices for ``loss="cross_entropy"``.
        tasks : array-like of shape (n_samples,)
            Task label of each training example. The sorted unique labels, ``tasks_``,
            define the columns of the subset matrices passed to :meth:`estimate`.
        X_target : array-like of shape (n_target, n_features) or (n_target, ...)
            Inputs of the target task, on which :math:`F` is the mean loss.
        y_target : array-like of shape (n_target,) or (n_target, n_outputs)

        Returns
        -------
        self : GradientSubsetEstimator
            The fitted estimator.
        """
        X, y, X_target, y_target = self._validate_fit_data(X, y, tasks, X_target, y_target)
        device = resolve_device(self.device)
        model, X_t, X_target_t = self._pretrained_model(X, X_target, device)
        self._check_model_outputs(self.n_outputs_, y, "y")
        self._check_model_outputs(self.n_outputs_, y_target, "y_target")
        projection = self._random_projection(X_t, device)

        start = time.perf_counter()
        # One callback task per batch of examples (see _projected_jacobians).
        callbacks = FitCallbacks(self, X, y)
        size = int(self.batch_size)
        callbacks.begin_fit(math.ceil(X.shape[0] / size) + math.ceil(X_target.shape[0] / size))
        train, target = self._projected_jacobians(model, X_t, X_target_t, projection, callbacks)
        (outputs, grads), (target_outputs, target_grads) = train, target
        if projection is None:
            basis = row_space_basis(grads)
            if basis is not None:
                grads, target_grads = grads @ basis, target_grads @ basis
            self.projection_dim_ = int(grads.shape[-1])
        loss = make_loss(self.loss)
        y_t = loss_targets(to_tensor(y, device), self.loss)
        y_target_t = loss_targets(to_tensor(y_target, device), self.loss)
        hessians = task_hessians(
            grads, outputs, y_t, to_tensor(self.task_index_, device), self.n_tasks_, loss
        )
        pretrained = loss.value(target_outputs, y_target_t).mean()
        self.fit_time_ = time.perf_counter() - start
        if self.verbose:
            print(
                f"[GradientSubsetEstimator] gradients of {X.shape[0]} training and "
                f"{X_target.shape[0]} target examples projected from {self.n_params_} to "
                f"{self.projection_dim_} dimensions in {self.fit_time_:.2f} s"
            )

        self.train_outputs_ = to_numpy(outputs)
        self.train_gradients_ = to_numpy(grads)
        self.target_outputs_ = to_numpy(target_outputs)
        self.target_gradients_ = to_numpy(target_grads)
        self.task_hessians_ = to_numpy(hessians)
        self.pretrained_target_loss_ = float(pretrained)
        self._y = y
        self._y_target = y_target
        callbacks.end_fit()
        return self

    def _validate_fit_data(self, X, y, tasks, X_target, y_target):
        """Checked arrays of ``fit``; sets ``tasks_``, ``n_tasks_``, ``task_sizes_``."""
        X = validate_data(self, X, dtype=[np.float64, np.float32], allow_nd=True, reset=True)
        X_target = validate_data(
            self, X_target, dtype=X.dtype, allow_nd=True, reset=False, ensure_min_samples=1
        )
        if X_target.shape[1:] != X.shape[1:]:
            raise ValueError(
                f"X_target has sample shape {X_target.shape[1:]}, but X has {X.shape[1:]}."
            )
        y = self._check_targets(y, X.shape[0], "y", X.dtype)
        y_target = self._check_targets(y_target, X_target.shape[0], "y_target", X.dtype)
        tasks = column_or_1d(tasks, warn=True)
        if tasks.shape[0] != X.shape[0]:
            raise ValueError(
                f"tasks has {tasks.shape[0]} entries, but X has {X.shape[0]} rows; give one "
                "task label per training example."
            )
        self.tasks_, task_index = np.unique(tasks, return_inverse=True)
        self.n_tasks_ = len(self.tasks_)
        self.task_sizes_ = np.bincount(task_index, minlength=self.n_tasks_)
        self.task_index_ = task_index.astype(np.int64)
        return X, y, X_target, y_target

    def _pretrained_model(self, X, X_target, device):
        """A copy of ``model`` on ``device`` in the dtype of X, checked on two examples.

        Returns the model and the inputs as tensors; sets ``n_params_`` and ``n_outputs_``.
        """
        model = copy.deepcopy(self.model).to(device=device, dtype=torch_dtype(X.dtype))
        model.eval()
        params = trainable_parameters(model)
        if not params:
            raise ValueError("model has no trainable parameters (requires_grad=True).")
        self.n_params_ = int(sum(p.numel() for p in params.values()))

        X_t = to_tensor(X, device)
        X_target_t = to_tensor(X_target, device)
        try:
            with torch.no_grad():
                probe = model(X_t[:2])
        except Exception as exc:  # the model's own error says what did not fit
            raise ValueError(
                f"model could not be applied to X of sample shape {X.shape[1:]}: {exc}"
            ) from exc
        if not isinstance(probe, torch.Tensor) or probe.shape[0] != min(2, X.shape[0]):
            raise ValueError(
                "model must return a tensor with one row per input example; got "
                f"{type(probe).__name__} of shape {getattr(probe, 'shape', None)}."
            )
        self.n_outputs_ = int(probe.reshape(probe.shape[0], -1).shape[1])
        return model, X_t, X_target_t

    def _random_projection(self, X_t, device):
        """The projection of the parameters (None with ``projection_dim=None``)."""
        if self.projection_dim is None:
            return None
        dim, itemsize = int(self.projection_dim), X_t.element_size()
        check_allocation("projection_dim", (self.n_params_, dim), itemsize)
        check_allocation("projection_dim", (X_t.shape[0], self.n_outputs_, dim), itemsize)
        check_allocation("projection_dim", (self.n_tasks_, dim, dim), itemsize)
        generator = make_generator(self.random_state, device)
        projection = random_projection(
            self.n_params_, self.projection_dim, self.projection, generator, X_t.dtype, device
        )
        self.projection_dim_ = dim
        return projection

    def _projected_jacobians(self, model, X_t, X_target_t, projection, callbacks):
        """Outputs and projected Jacobians of the training and the target examples.

        Each batch of ``batch_size`` examples is one step task of the fit opened by
        ``callbacks`` (:class:`~sktaskmet._training.FitCallbacks`, begun by :meth:`fit`):
        a :class:`~sklearn.callback.ProgressBar` advances batch by batch. A batch of
        Jacobians is no fitted model, so its task closes without one (a ``ScoringMonitor``
        has nothing to score), and a callback cannot stop the fit early: every estimate
        needs the Jacobians of all examples. NaN or infinity in the outputs or the
        Jacobians raises: the linearisation is undefined there, and every estimate would
        inherit it.
        """
        size = int(self.batch_size)

        def batch_done():
            # The task opens and closes once the batch is done: progress follows the
            # batches, and output_jacobians stays free of callback logic.
            callbacks.end_step(callbacks.begin_step(), finished=False)

        results = []
        for name, inputs in (("X", X_t), ("X_target", X_target_t)):
            outputs, jacobians = output_jacobians(model, inputs, projection, size, batch_done)
            if not (bool(torch.isfinite(outputs).all()) and bool(torch.isfinite(jacobians).all())):
                raise ValueError(
                    f"the model's outputs or their Jacobians on {name} contain NaN or "
                    "infinity at the pretrained parameters, where the model is linearised; "
                    "check the model and the scale of the inputs."
                )
            results.append((outputs, jacobians))
        return results

    # ------------------------------------------------------------------ estimate

    def _check_subsets(self, S):
        S = check_array(S, dtype=self.train_outputs_.dtype, input_name="S", ensure_min_samples=1)
        if S.shape[1] != self.n_tasks_:
            raise ValueError(
                f"S has {S.shape[1]} columns, but the estimator was fitted on "
                f"n_tasks_={self.n_tasks_} tasks; give one column per task, in the order "
                "of tasks_."
            )
        check_subset_weights(S, "S")
        return S

    def _fitted_tensors(self, device):
        """The fitted arrays that every batch of subsets reads, as tensors on ``device``.

        Converted once per :meth:`estimate` call and shared by all batches (and threads),
        rather than copied to the device again for every batch.
        """
        return {
            "jacobians": to_tensor(self.train_gradients_, device),
            "outputs": to_tensor(self.train_outputs_, device),
            "y": loss_targets(to_tensor(self._y, device), self.loss),
            "task_index": to_tensor(self.task_index_, device),
            "pretrained_hessians": to_tensor(self.task_hessians_, device),
            "target_jacobians": to_tensor(self.target_gradients_, device),
            "target_outputs": to_tensor(self.target_outputs_, device),
            "y_target": loss_targets(to_tensor(self._y_target, device), self.loss),
        }

    def _solve_batch(self, S_batch, device, fitted, loss, eigenbasis):
        """F-hat, Newton iterations, convergence and non-finite flags of a batch (numpy)."""
        result = solve_subsets(
            fitted["jacobians"],
            fitted["outputs"],
            fitted["y"],
            fitted["task_index"],
            to_tensor(S_batch, device),
            loss=loss,
            penalty=float(self.penalty),
            solver=self.solver,
            pretrained_hessians=fitted["pretrained_hessians"],
            preconditioner=self.preconditioner,
            eigenbasis=eigenbasis,
            max_iter=self.max_iter,
            tol=float(self.tol),
        )
        values = target_losses(
            result.solution,
            fitted["target_jacobians"],
            fitted["target_outputs"],
            fitted["y_target"],
            loss,
        )
        flags = (result.n_iter, result.converged, result.non_finite)
        return (to_numpy(values), *(to_numpy(flag) for flag in flags))

    def estimate(self, S, *, return_n_iter=False, progress=False):
        """Estimated target loss :math:`\\hat F(s)` of fine-tuning on each subset.

        Parameters
        ----------
        S : array-like of shape (n_subsets, n_tasks)
            One subset per row: 0/1 indicators of the tasks to train on, or task weights in
            [0, 1] (each example's loss is weighted by its task's weight). Columns follow
            ``tasks_``.
        return_n_iter : bool, default=False
            Also return the number of Newton iterations of each subset.
        progress : bool, default=False
            Show a progress bar of the subsets solved, one batch of ``subset_batch_size``
            at a time (it needs the rich package). ``verbose`` prints a line per batch.

        Returns
        -------
        F_hat : ndarray of shape (n_subsets,)
            Estimated mean target loss after fine-tuning on each subset (lower is better).
        n_iter : ndarray of shape (n_subsets,)
            Only when ``return_n_iter=True``.
        """
        check_is_fitted(self, "train_gradients_")
        S = self._check_subsets(S)
        device = resolve_device(self.device)
        size = int(self.subset_batch_size)
        batches = [S[start : start + size] for start in range(0, S.shape[0], size)]
        fitted = self._fitted_tensors(device)
        loss = make_loss(self.loss)
        eigenbasis = None
        if self.solver == "newton-cg" and self.preconditioner == "eigenbasis":
            # shared by all batches
            eigenbasis = pretrained_eigenbasis(fitted["pretrained_hessians"])
        if self.n_jobs is None or self.n_jobs == 1:
            # Lazily, one batch after the other: progress follows each batch.
            solved = (self._solve_batch(b, device, fitted, loss, eigenbasis) for b in batches)
        else:
            parallel = streaming_parallel(n_jobs=self.n_jobs, prefer="threads")
            solved = parallel(
                delayed(self._solve_batch)(batch, device, fitted, loss, eigenbasis)
                for batch in batches
            )
        results = []
        with LoopProgress(
            S.shape[0],
            type(self).__name__,
            bar=progress,
            verbose=self.verbose,
            unit="subsets solved",
        ) as reporter:
            for batch, result in zip(batches, solved, strict=True):
                results.append(result)
                iterations = int(result[1].max())
                reporter.advance(len(batch), f", at most {iterations} Newton iterations")
        F_hat, n_iter, converged, non_finite = (
            np.concatenate([r[k] for r in results]) for k in range(4)
        )
        self._warn_unsolved(converged, non_finite, "subset problems")
        if return_n_iter:
            return F_hat, n_iter
        return F_hat

    def _warn_unsolved(self, converged, non_finite, what, consequence=None):
        """Warn about problems that met NaN or infinity, or did not converge.

        A problem whose Newton direction was NaN or infinite kept its last finite iterate
        (see :func:`~._newton.solve_subsets`): :class:`NonFiniteWarning`. One that ran out
        of iterations: :class:`~sklearn.exceptions.ConvergenceWarning`.
        """
        name, total = type(self).__name__, converged.shape[0]
        if non_finite.any():
            warnings.warn(
                f"{name}: the Newton direction of {int(non_finite.sum())} of {total} {what} "
                "was NaN or infinite; each kept its last finite iterate (the pretrained "
                "parameters if none was finite) and stopped there. Check that the loss has "
                "finite derivatives at the model's outputs.",
                NonFiniteWarning,
                stacklevel=3,
            )
        unconverged = ~converged & ~non_finite
        if unconverged.any():
            consequence = consequence or "increase max_iter or tol"
            warnings.warn(
                f"{int(unconverged.sum())} of {total} {what} did not converge within "
                f"max_iter={self.max_iter} Newton iterations; {consequence}.",
                ConvergenceWarning,
                stacklevel=3,
            )

    def influence(self, base=None, *, damping=0.0):
        """First-order influence of removing each task: the influence-function baseline.

        On the same projected gradients as :meth:`estimate`, the classical influence
        function predicts the leave-one-out effect of task :math:`k` from one solve at the
        base set :math:`b` and one linear system, without solving the problems of the
        subsets without :math:`k`:

        .. math::

            I_k = -b_k\\, \\nabla F(\\hat w_b)^\\top H^{-1}
            \\frac{g_k + n_k \\lambda \\hat w_b}{N_b}
            \\approx F(b) - F(b - b_k e_k),

        where :math:`\\hat w_b` solves the base set's problem, :math:`g_k` sums the loss
        gradients of task :math:`k`'s :math:`n_k` examples there, :math:`N_b` is the total
        weight of the base set's examples and :math:`H` is the Hessian of its objective
        (exact in the projected space, plus ``damping``). The term in :math:`\\lambda
        \\hat w_b` comes from the objective's normalisation by :math:`N_b`. It is the
        derivative of the estimate in the task weight, so it agrees with
        ``estimate`` differences when removing one task changes the solution little, and
        departs from them as the tasks interact.

        Parameters
        ----------
        base : array-like of shape (n_tasks,), default=None
            Task weights of the base set; None is the full set. Not all zero.
        damping : float >= 0, default=0.0
            Added to the diagonal of the Hessian (which already holds the penalty
            :math:`\\lambda`); a larger value trades accuracy for robustness.

        Returns
        -------
        influence : ndarray of shape (n_tasks,)
            :math:`I_k`: positive when task :math:`k` raises the target loss (removing it
            would help), oriented like a surrogate's ``attribution`` of the loss, so
            :func:`~sktaskmet.surrogate.loo_correlation` compares them directly.
        """
        check_is_fitted(self, "train_gradients_")
        if base is None:
            base = np.ones(self.n_tasks_)
        base = self._check_subsets(np.asarray(base, dtype=float).reshape(1, -1))[0]
        if not np.any(base[self.task_index_] > 0):
            raise ValueError("base must include at least one task with examples.")
        if isinstance(damping, bool) or not isinstance(damping, Real) or not damping >= 0:
            raise ValueError(f"damping must be a float >= 0; got {damping!r}.")
        device = resolve_device(self.device)
        fitted = self._fitted_tensors(device)
        loss = make_loss(self.loss)
        eigenbasis = None
        if self.solver == "newton-cg" and self.preconditioner == "eigenbasis":
            eigenbasis = pretrained_eigenbasis(fitted["pretrained_hessians"])
        base_t = to_tensor(base, device)
        result = solve_subsets(
            fitted["jacobians"],
            fitted["outputs"],
            fitted["y"],
            fitted["task_index"],
            base_t[None],
            loss=loss,
            penalty=float(self.penalty),
            solver=self.solver,
            pretrained_hessians=fitted["pretrained_hessians"],
            preconditioner=self.preconditioner,
            eigenbasis=eigenbasis,
            max_iter=self.max_iter,
            tol=float(self.tol),
        )
        self._warn_unsolved(
            to_numpy(result.converged),
            to_numpy(result.non_finite),
            "base set problem",
            "the influence is taken at an inexact solution",
        )
        values = task_influence(
            fitted, result.solution[0], base_t, loss, float(self.penalty), float(damping)
        )
        return to_numpy(values)

    def relative_error(self, S, F_true):
        """Mean relative error of :math:`\\hat F` against measured subset performance.

        .. math:: \\frac{1}{m}\\sum_{r=1}^m \\frac{|\\hat F(s_r) - F(s_r)|}{|F(s_r)|}

        Parameters
        ----------
        S : array-like of shape (n_subsets, n_tasks)
            Subsets, as in :meth:`estimate`.
        F_true : array-like of shape (n_subsets,)
            Measured target loss of real fine-tuning on each subset (nonzero).

        Returns
        -------
        error : float
            The mean relative error (0.01 is 1%).
        """
        check_is_fitted(self, "train_gradients_")
        S = self._check_subsets(S)
        F_true = column_or_1d(check_array(F_true, ensure_2d=False, input_name="F_true"))
        if F_true.shape[0] != S.shape[0]:
            raise ValueError(
                f"F_true has {F_true.shape[0]} values, but S has {S.shape[0]} subsets."
            )
        if np.any(F_true == 0):
            raise ValueError("F_true has zeros; the relative error is undefined there.")
        F_hat = self.estimate(S)
        return float(np.mean(np.abs(F_hat - F_true) / np.abs(F_true)))
