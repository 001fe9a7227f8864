"""Task discovery: meta-optimised labelings that networks generalize on.

Atanov, Filatov, Yeo, Sohmshetty and Zamir, "Task Discovery: Finding the Tasks that Neural
Networks Generalize on", NeurIPS 2022. The torch numerics live in :mod:`._meta`; this module
is the scikit-learn glue (validation, the outer optimisation loop, fitted state as numpy).
"""

import copy
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
    clone,
)
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .._backend import (
    RandomStreams,
    autocast,
    autocast_dtype,
    load_numpy_state,
    resolve_device,
    state_to_numpy,
    to_numpy,
    to_tensor,
)
from .._nn import check_hidden_layer_sizes
from .._training import CallbackSupportMixin, FitCallbacks, TrainingLoop
from .._validation import fit_guard, fitted_params
from ._agreement import AgreementScorer
from ._meta import LearnerPair, TaskEncoder, meta_loss, orthonormal_heads
from ._networks import (
    BUILTIN_MODULES,
    check_vmappable,
    feature_builder,
    module_builder,
    output_width,
)

__all__ = ["TaskDiscovery", "random_network_tasks"]

# Columns of history_: the training core's record of every iteration.
_HISTORY_KEYS = ("iteration", "train_loss", "train_agreement_loss", "train_uniformity_loss")

# Fewest samples that leave two learner halves and a held-out point in every batch.
MIN_SAMPLES = 4


def _task_similarity(tasks):
    """Symmetric agreement ``max(a, 1 - a)`` between every pair of binary tasks.

    ``a`` is the fraction of samples on which two tasks give the same label; a task and its
    complement are the same task, hence the ``max``.
    """
    signed = 2.0 * np.asarray(tasks, dtype=np.float64) - 1.0
    agree = 0.5 * (1.0 + signed.T @ signed / signed.shape[0])
    return np.maximum(agree, 1.0 - agree)


class TaskDiscovery(
    CallbackSupportMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    r"""Discover binary tasks on which networks generalize, by meta-optimising agreement.

    A task network is a shared encoder :math:`h(x) \in \mathbb{R}^d` (an MLP backbone, a
    linear map without bias and a batch normalisation with its bias frozen at zero) and
    ``n_tasks`` fixed orthonormal heads :math:`w_1, \dots, w_T` (drawn from
    ``random_state``); task :math:`i` labels :math:`x` as 1 when :math:`h(x) \cdot w_i > 0`.
    Only the encoder is trained, to minimise on each batch

    .. math::

        L = \frac{1}{T} \sum_{i=1}^{T}
            \mathrm{SCE}\big(f_{\theta_A^i}(x'), f_{\theta_B^i}(x')\big)
            + \lambda\, \log \frac{2}{n(n-1)} \sum_{j<k}
              e^{-t \lVert z_j - z_k \rVert^2},
        \qquad z_j = \frac{h(x_j)}{\lVert h(x_j) \rVert},\ t = 2,

    where :math:`\theta_A^i, \theta_B^i` are two learner networks started from a fixed pair
    of initial weights and trained by ``inner_steps`` plain SGD steps (rate ``inner_lr``) on
    the soft labels :math:`\mathrm{softmax}(5 [-h \cdot w_i, h \cdot w_i])`, learner A on
    one half of the batch and learner B on the other ("disjoint" halves); :math:`x'` is a
    held-out batch and SCE the symmetric cross-entropy
    :math:`\mathrm{CE}(p, q) + \mathrm{CE}(q, p)`. The gradient flows through the fully
    unrolled inner SGD trajectories (second derivatives included). All ``n_tasks x 2``
    learners are trained as one batched computation (:func:`torch.func.vmap`). The second
    term, weighted by :math:`\lambda` = ``uniformity``, spreads the embeddings over the
    sphere; without it the tasks collapse into imbalanced near-duplicates.

    After fitting, the agreement score of every discovered task is measured with an
    :class:`AgreementScorer` trained on the discovered labels (see ``agreement_scorer``).

    Read more in the :ref:`User Guide <discovery>`.

    Parameters
    ----------
    n_tasks : int, default=8
        Number of tasks, one per orthonormal head. At most ``embedding_dim``.
    embedding_dim : int, default=None
        Dimension ``d`` of the embedding ``h``; ``None`` uses ``n_tasks``.
    hidden_layer_sizes : tuple of int, default=(128, 128)
        Hidden layers of the encoder's backbone and of the two learner networks (the same
        architecture, as in the paper).
    inner_steps : int, default=10
        SGD steps of the learners in the unrolled inner loop. The paper uses 50 with a
        ResNet-18; cost (time and memory of the backward pass) grows linearly with it.
    inner_lr : float, default=0.5
        Learning rate of the learners' plain SGD. The paper uses 0.01 for a ResNet-18; small
        MLPs need a larger rate to move away from their initialisation in a few steps (on
        the digits, 0.1 leaves the agreement term nearly flat and the discovered tasks no
        better than those of a random network; 0.5 finds tasks of higher agreement).
    uniformity : float, default=1.0
        Weight :math:`\lambda` of the uniformity loss. ``0`` disables it.
    max_iter : int or "auto", default="auto"
        Outer (Adam) steps on the encoder. ``0`` keeps the random initial encoder: its tasks
        are the random-network baseline (see :func:`random_network_tasks`). ``"auto"``
        scales the budget with the data: 20 passes of the inner batch over the samples,
        ``ceil(20 n_samples / n_inner)`` clipped to [20, 300] (141 steps on the 1797
        digits, 47 on 300 samples), so that small data sets fit in seconds.
    batch_size : int, default=128
        Points per inner batch (each learner trains on half of it); a held-out batch of the
        same size is drawn from the remaining points. Both are capped for small data sets.
    learning_rate : float, default=1e-3
        Adam learning rate of the encoder.
    encoder : None, {"mlp", "cnn", "resnet"}, callable or torch.nn.Module, default=None
        Backbone of the task encoder. ``None``/``"mlp"``: an MLP of ``hidden_layer_sizes``;
        ``"cnn"``/``"resnet"``: the convolutional part (up to the global average pool) of
        :class:`~sktaskmet.discovery.SmallCNN` / :class:`~sktaskmet.discovery.SmallResNet`,
        for images ``X`` of shape (n_samples, channels, height, width); a callable (called
        with no arguments) or a module (re-initialised) mapping a batch to features of any
        shape, flattened. BatchNorm layers are allowed here (the encoder is trained as
        one network).
    learner : None, {"mlp", "cnn", "resnet"}, callable or torch.nn.Module, default=None
        Architecture of the two learner networks of the inner loop, which must output 2
        logits (built-in networks do). ``None``/``"mlp"``: an MLP of
        ``hidden_layer_sizes``. The unrolled inner loop is batched over tasks and
        differentiated, so learners with BatchNorm running statistics or dropout are
        refused with a ValueError naming the layer (use GroupNorm or
        ``track_running_stats=False``).
    mixed_precision : {None, "bf16", "fp16"}, default=None
        Run the meta-loss (the encoder, the unrolled learners and the uniformity term) under
        :func:`torch.autocast` in bfloat16 or float16, with loss scaling for float16 (a
        step whose scaled gradients overflow is skipped and the scale lowered). Parameters,
        Adam's moments and the labels of :meth:`transform` stay in the dtype of ``X``.
        Meant for CUDA, where the unrolled inner loop is bound by matrix products; on the
        CPU ``"bf16"`` works (slowly on most processors) and ``"fp16"`` raises a
        ValueError. The default agreement scorer gets the same setting.
    agreement_scorer : estimator, None or "skip", default=None
        How the agreement scores of the discovered tasks are measured after fitting: an
        :class:`AgreementScorer` (cloned, then fitted on ``(X, tasks_)``), ``None`` for an
        ``AgreementScorer(hidden_layer_sizes=hidden_layer_sizes, module=learner,
        data_mode="same")`` with this estimator's ``device``, ``mixed_precision`` and
        ``random_state``, or ``"skip"`` to leave ``agreement_scores_`` as None.
    device : str or torch.device, default="auto"
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a
        :class:`torch.device`.
    random_state : int, RandomState instance or None, default=None
        Seeds the encoder, the learners' initial weights, the heads and the batches.
    verbose : int, default=0
        Print the losses of every iteration when positive.

    Attributes
    ----------
    tasks_ : ndarray of shape (n_samples, n_tasks), dtype int64
        Labels (0 or 1) of the training samples under every discovered task.
    balance_ : ndarray of shape (n_tasks,)
        Fraction of ones per task on the training samples.
    similarity_ : ndarray of shape (n_tasks, n_tasks)
        Symmetric agreement :math:`\max(a, 1 - a)` between tasks, :math:`a` the fraction of
        equal labels; 1 on the diagonal, 0.5 for unrelated balanced tasks.
    agreement_scores_ : ndarray of shape (n_tasks,) or None
        Agreement score of every task measured by ``agreement_scorer``; NaN for a task that
        labels every sample alike (it has no agreement to measure).
    agreement_scorer_ : AgreementScorer or None
        The fitted scorer.
    heads_ : ndarray of shape (embedding_dim, n_tasks)
        The fixed orthonormal heads.
    encoder_state_ : dict of str to ndarray
        Parameters and frozen normalisation statistics of the encoder.
    history_ : dict of str to ndarray
        Per iteration (the training core's record): ``"iteration"``, ``"train_loss"``,
        ``"train_agreement_loss"`` (mean symmetric cross-entropy) and
        ``"train_uniformity_loss"``.
    n_iter_ : int
        Outer iterations run.
    input_shape_ : tuple of int
        Shape of one sample of ``X``.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Defined when ``X`` has string feature names.

    See Also
    --------
    random_network_tasks : Tasks of an untrained encoder, the baseline of discovery.
    AgreementScorer : Agreement score of given labelings.
    sktaskmet.model_selection.AdversarialSplit : Train/test split along a discovered task.

    Notes
    -----
    Memory of the backward pass grows as ``inner_steps x n_tasks x 2`` copies of the
    learners' activations on half a batch, since the whole inner loop is unrolled.

    References
    ----------
    .. [1] A. Atanov, A. Filatov, T. Yeo, A. Sohmshetty and A. Zamir, "Task Discovery:
       Finding the Tasks that Neural Networks Generalize on", NeurIPS 2022.
    .. [2] T. Wang and P. Isola, "Understanding Contrastive Representation Learning through
       Alignment and Uniformity on the Hypersphere", ICML 2020.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sktaskmet import TaskDiscovery
    >>> X = load_digits().data[:300] / 16
    >>> discovery = TaskDiscovery(n_tasks=4, max_iter=5, inner_steps=3,
    ...                           agreement_scorer="skip", random_state=0).fit(X)
    >>> discovery.tasks_.shape
    (300, 4)
    >>> discovery.transform(X[:5]).shape
    (5, 4)
    """

    _parameter_constraints = {
        "n_tasks": [Interval(Integral, 1, None, closed="left")],
        "embedding_dim": [Interval(Integral, 1, None, closed="left"), None],
        "hidden_layer_sizes": ["array-like"],
        "inner_steps": [Interval(Integral, 1, None, closed="left")],
        "inner_lr": [Interval(Real, 0, None, closed="neither")],
        "uniformity": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "batch_size": [Interval(Integral, 2, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "encoder": [None, StrOptions(set(BUILTIN_MODULES)), callable],
        "learner": [None, StrOptions(set(BUILTIN_MODULES)), callable],
        "mixed_precision": [None, StrOptions({"bf16", "fp16"})],
        "agreement_scorer": [None, HasMethods(["fit"]), StrOptions({"skip"})],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_tasks=8,
        *,
        embedding_dim=None,
        hidden_layer_sizes=(128, 128),
        inner_steps=10,
        inner_lr=0.5,
        uniformity=1.0,
        max_iter="auto",
        batch_size=128,
        learning_rate=1e-3,
        encoder=None,
        learner=None,
        mixed_precision=None,
        agreement_scorer=None,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.n_tasks = n_tasks
        self.embedding_dim = embedding_dim
        self.hidden_layer_sizes = hidden_layer_sizes
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.uniformity = uniformity
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.encoder = encoder
        self.learner = learner
        self.mixed_precision = mixed_precision
        self.agreement_scorer = agreement_scorer
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ validation helpers

    def _embedding_dim(self):
        return self.n_tasks if self.embedding_dim is None else int(self.embedding_dim)

    def _hidden_layer_sizes(self):
        return check_hidden_layer_sizes(self.hidden_layer_sizes)

    def _check_params_against_data(self, n_samples):
        if self.n_tasks > self._embedding_dim():
            raise ValueError(
                f"TaskDiscovery was asked for more tasks than its embedding can hold: "
                f"n_tasks={self.n_tasks} > embedding_dim={self._embedding_dim()}. The tasks are "
                "defined by orthonormal heads in the embedding, so use n_tasks <= embedding_dim."
            )
        if n_samples < MIN_SAMPLES:
            raise ValueError(
                f"TaskDiscovery needs at least {MIN_SAMPLES} samples (two learner halves and a "
                f"held-out point per batch); got n_samples = {n_samples}."
            )

    def _build_encoder(self):
        """The task encoder of the fitted architecture (``self._architecture``)."""
        encoder, _, hidden = self._architecture
        if (encoder is None or encoder == "mlp") and len(self.input_shape_) == 1:
            return TaskEncoder(self.input_shape_[0], hidden, self._embedding_dim())
        backbone = feature_builder(encoder, self.input_shape_, hidden)()
        width = output_width(backbone, self.input_shape_)
        return TaskEncoder(width, (), self._embedding_dim(), backbone=backbone)

    def _build_learners(self):
        """The two learner networks, checked for what the unrolled inner loop can batch."""
        _, learner, hidden = self._architecture
        build = module_builder(learner, self.input_shape_, 2, hidden)
        learners = [build() for _ in range(2)]
        check_vmappable(learners[0], "learner", allow_running_stats=False, allow_dropout=False)
        width = output_width(learners[0], self.input_shape_)
        if width != 2:
            raise ValueError(
                f"learner: the network maps a sample of shape {self.input_shape_} to {width} "
                "outputs; the learners of binary tasks need 2."
            )
        return learners

    def _max_iter(self, n_samples, n_inner):
        """``max_iter``, or for ``"auto"`` 20 passes over the data clipped to [20, 300]."""
        if self.max_iter != "auto":
            return self.max_iter
        return int(np.clip(np.ceil(20 * n_samples / max(n_inner, 1)), 20, 300))

    # ------------------------------------------------------------------------------ fit

    @fit_guard
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Discover ``n_tasks`` tasks on ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Inputs, e.g. images of shape (n_samples, channels, height, width); float32
            input computes in float32, anything else in float64.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : TaskDiscovery
            Fitted estimator.
        """
        X = validate_data(self, X, reset=True, dtype=[np.float64, np.float32], allow_nd=True)
        self._check_params_against_data(X.shape[0])
        self.input_shape_ = tuple(X.shape[1:])
        # Kept for transform: these parameters may be changed by set_params after fit.
        self._architecture = (self.encoder, self.learner, self._hidden_layer_sizes())
        device = resolve_device(self.device)
        amp_dtype = autocast_dtype(self.mixed_precision, device)
        x = to_tensor(X, device)
        dtype = x.dtype

        # Independent streams: the batches, the initial weights and the heads.
        streams = RandomStreams(self.random_state)
        generator = streams.torch("batches", device)
        with streams.seeded("initial_weights"):
            encoder = self._build_encoder()
            learners = self._build_learners()
        encoder = encoder.to(device=device, dtype=dtype)
        learner_pair = LearnerPair(learners).to(device=device, dtype=dtype)
        heads = orthonormal_heads(
            self._embedding_dim(), self.n_tasks, streams.torch("heads"), dtype, device
        )

        callbacks = FitCallbacks(
            self, X, y, fitted_attributes=lambda: self._fitted_encoder(encoder, heads, x)
        )
        self._meta_optimise(encoder, heads, learner_pair, x, generator, amp_dtype, callbacks)

        encoder.freeze_statistics(x)
        self.heads_ = to_numpy(heads)
        self.encoder_state_ = state_to_numpy(encoder)
        self.tasks_ = self._labels(encoder, heads, x)
        self._n_features_out = self.n_tasks
        self.balance_ = self.tasks_.mean(axis=0)
        self.similarity_ = _task_similarity(self.tasks_)
        self._score_tasks(X)
        return self

    def _meta_optimise(self, encoder, heads, learner_pair, x, generator, amp_dtype, callbacks):
        """Adam on the encoder over the meta-loss, on the shared training core.

        ``amp_dtype`` (None, bfloat16 or float16) is the autocast dtype of the meta-loss.
        """
        n_samples = x.shape[0]
        # Inner batch (two learner halves) and a held-out batch from the remaining points.
        n_inner = min(self.batch_size, (2 * n_samples) // 3)
        n_inner -= n_inner % 2
        n_heldout = min(self.batch_size, n_samples - n_inner)
        optimizer = torch.optim.Adam(encoder.parameters(), lr=self.learning_rate)
        # float16 gradients underflow without loss scaling; a disabled scaler is a no-op, so
        # full precision and bfloat16 take the same path.
        scaler = torch.amp.GradScaler(x.device.type, enabled=amp_dtype == torch.float16)

        def step(iteration):
            order = torch.randperm(n_samples, generator=generator, device=x.device)
            x_inner = x[order[:n_inner]]
            x_heldout = x[order[n_inner : n_inner + n_heldout]]
            with autocast(x.device, amp_dtype):
                loss, agreement, uniform = meta_loss(
                    encoder,
                    heads,
                    learner_pair,
                    x_inner,
                    x_heldout,
                    self.inner_steps,
                    self.inner_lr,
                    self.uniformity,
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            gradients = [p.grad for p in encoder.parameters() if p.grad is not None]
            finite_gradients = all(torch.isfinite(g).all() for g in gradients)
            # An overflow of the scaled float16 gradients is the scaler's business (it skips
            # the step and lowers the scale); anything else non-finite ends the fit.
            if not (torch.isfinite(loss) and (finite_gradients or scaler.is_enabled())):
                # Checked before optimizer.step(): the encoder still holds the parameters of
                # the last finite iteration ("checked" guard, no snapshot per step).
                return None
            scaler.step(optimizer)
            scaler.update()
            return {
                "loss": loss.detach(),
                "agreement_loss": agreement.detach(),
                "uniformity_loss": uniform.detach(),
            }

        loop = TrainingLoop(
            step,
            max_iter=self._max_iter(n_samples, n_inner),
            guard="checked",
            name="TaskDiscovery",
            verbose=self.verbose,
            advice="Lower learning_rate or inner_lr.",
            callbacks=callbacks,
        )
        result = loop.run()
        self.n_iter_ = result.n_iter
        self.history_ = {key: result.history.get(key, np.asarray([])) for key in _HISTORY_KEYS}

    def _fitted_encoder(self, encoder, heads, x):
        """Fitted attributes of the current encoder (for scikit-learn callbacks).

        The normalisation statistics are frozen on a copy, so training goes on unchanged.
        """
        current = copy.deepcopy(encoder)
        current.freeze_statistics(x)
        return {"heads_": to_numpy(heads), "encoder_state_": state_to_numpy(current)}

    def _score_tasks(self, X):
        self.agreement_scorer_ = None
        self.agreement_scores_ = None
        if isinstance(self.agreement_scorer, str) and self.agreement_scorer == "skip":
            return
        if self.agreement_scorer is None:
            scorer = AgreementScorer(
                hidden_layer_sizes=self._hidden_layer_sizes(),
                module=self.learner,
                data_mode="same",
                mixed_precision=self.mixed_precision,
                device=self.device,
                random_state=self.random_state,
            )
        else:
            scorer = clone(self.agreement_scorer)
        scores = np.full(self.n_tasks, np.nan)
        # A constant labeling has nothing to agree on (and a classifier cannot be trained
        # on it); it keeps NaN.
        varied = np.flatnonzero((self.balance_ > 0) & (self.balance_ < 1))
        if varied.size:
            scorer.fit(X, self.tasks_[:, varied])
            scores[varied] = np.asarray(scorer.agreement_scores_, dtype=np.float64)
            self.agreement_scorer_ = scorer
        self.agreement_scores_ = scores

    # ------------------------------------------------------------------------ transform

    @torch.no_grad()
    def _labels(self, encoder, heads, x, chunk_size=4096):
        encoder.eval()
        labels = [
            (encoder(x[i : i + chunk_size], batch_statistics=False) @ heads > 0)
            for i in range(0, x.shape[0], chunk_size)
        ]
        return to_numpy(torch.cat(labels)).astype(np.int64)

    @fitted_params("n_tasks", "embedding_dim", "hidden_layer_sizes", "encoder")
    def transform(self, X):
        """Labels of ``X`` under every discovered task.

        The encoder normalises with the statistics of the training set frozen after fitting,
        so a sample's labels do not depend on the other samples passed with it, and
        ``transform`` of the training set equals ``tasks_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        tasks : ndarray of shape (n_samples, n_tasks), dtype int64
            Label (0 or 1) of every sample under every task.
        """
        check_is_fitted(self, "encoder_state_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32], allow_nd=True)
        if tuple(X.shape[1:]) != self.input_shape_:
            raise ValueError(
                f"X has samples of shape {tuple(X.shape[1:])}, but TaskDiscovery was fitted on "
                f"samples of shape {self.input_shape_}."
            )
        device = resolve_device(self.device)
        x = to_tensor(X, device)
        # Built on the meta device: no initial weights are drawn (the global RNG is left
        # alone) for parameters that the fitted state overwrites.
        with torch.device("meta"):
            skeleton = self._build_encoder()
        encoder = load_numpy_state(
            skeleton.to_empty(device="cpu"), self.encoder_state_, device, x.dtype
        )
        heads = to_tensor(self.heads_, device, x.dtype)
        return self._labels(encoder, heads, x)

    def fit_transform(self, X, y=None):
        """Fit on ``X`` and return ``tasks_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        tasks : ndarray of shape (n_samples, n_tasks), dtype int64
        """
        return self.fit(X).tasks_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []
        tags.target_tags.required = False
        return tags


def random_network_tasks(
    X,
    n_tasks=8,
    *,
    embedding_dim=None,
    hidden_layer_sizes=(128, 128),
    encoder=None,
    device="auto",
    random_state=None,
):
    """Tasks of an untrained, randomly initialised task network: the baseline of discovery.

    The same encoder and orthonormal heads as :class:`TaskDiscovery` at its initialisation
    (``max_iter=0``): ``tau_i(x) = [h(x) . w_i > 0]`` with ``h`` a random MLP followed by a
    bias-free projection and a normalisation by the statistics of ``X``. Such labelings
    inherit the network's inductive biases, so their agreement score sits between those of
    human-labelled tasks and of random labels; a discovered task is only interesting if it
    beats them.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or (n_samples, ...)
    n_tasks : int, default=8
    embedding_dim : int, default=None
        ``None`` uses ``n_tasks``.
    hidden_layer_sizes : tuple of int, default=(128, 128)
    encoder : None, {"mlp", "cnn", "resnet"}, callable or torch.nn.Module, default=None
        Backbone of the random encoder, as in :class:`TaskDiscovery`.
    device : str or torch.device, default="auto"
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    tasks : ndarray of shape (n_samples, n_tasks), dtype int64
        Label (0 or 1) of every sample under every task.

    See Also
    --------
    TaskDiscovery : Meta-optimised tasks.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sktaskmet import random_network_tasks
    >>> tasks = random_network_tasks(load_digits().data, n_tasks=3, random_state=0)
    >>> tasks.shape
    (1797, 3)
    """
    discovery = TaskDiscovery(
        n_tasks=n_tasks,
        embedding_dim=embedding_dim,
        hidden_layer_sizes=hidden_layer_sizes,
        encoder=encoder,
        max_iter=0,
        agreement_scorer="skip",
        device=device,
        random_state=random_state,
    )
    return discovery.fit(X).tasks_
