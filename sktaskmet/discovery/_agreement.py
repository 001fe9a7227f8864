"""Agreement score of labelings: do networks trained on a labeling agree off its points?"""

import time
from itertools import combinations
from numbers import Integral, Real

import numpy as np
import torch
from joblib import Parallel, delayed, effective_n_jobs
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.utils._param_validation import HasMethods, Interval, RealNotInt, StrOptions
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from .._backend import (
    autocast_dtype,
    make_generator,
    resolve_device,
    seed_from_random_state,
    seeded,
    to_numpy,
    to_tensor,
    torch_dtype,
)
from .._nn import ACTIVATIONS, check_hidden_layer_sizes
from .._training import CallbackSupportMixin, FitCallbacks
from .._validation import fit_guard
from ._ensemble import DATA_MODES, ModuleEnsemble, batch_schedule, train_ensemble
from ._memory import MEMORY_FRACTION, available_memory, member_bytes, plan_chunks
from ._networks import BUILTIN_MODULES, module_builder, output_width

__all__ = ["AgreementScorer"]

_LABEL_TARGETS = ("binary", "multiclass", "multiclass-multioutput", "multilabel-indicator")


class AgreementScorer(CallbackSupportMixin, BaseEstimator):
    r"""Agreement score of one or many labelings of a data set.

    A labeling :math:`\tau` of inputs :math:`x_1, \dots, x_n` is scored by training
    ``n_models`` networks :math:`f_1, \dots, f_K` on :math:`(x_i, \tau(x_i))` from different
    random initialisations and measuring how often their argmax predictions agree on
    held-out inputs :math:`H`:

    .. math::

        \mathrm{AS}(\tau) = \frac{2}{K (K - 1)} \sum_{a < b}
        \frac{1}{|H|} \sum_{x \in H} \mathbb{1}\left[f_a(x) = f_b(x)\right].

    No held-out labels are needed. Networks generalize on labelings of high agreement
    (human-made class splits score close to 1), while random labelings score low: each
    network memorises the training labels and guesses differently elsewhere. This is the
    measure of Atanov et al., *Task Discovery: Finding the Tasks that Neural Networks
    Generalize on* (NeurIPS 2022).

    All ``n_tasks * n_models`` networks (multi-layer perceptrons, or any architecture given
    as ``module``: CNNs on images, say) are trained together as one batched ensemble
    (parameters stacked with :func:`torch.func.stack_module_state` and evaluated under
    :func:`torch.func.vmap`): one batched step trains every network, with no Python loop
    over them. Each network is trained by its own Adam optimiser on the
    mean cross-entropy of its own minibatches, exactly as if trained alone. Model ``k``
    starts from the same initial weights and sees the same data order for every labeling,
    so the score of a labeling does not depend on which other labelings are scored with it.

    Alternatively, ``estimator`` takes any scikit-learn classifier with a ``random_state``
    parameter; its clones with ``n_models`` different seeds are fitted through
    :class:`joblib.Parallel`.

    Read more in the :ref:`User Guide <discovery>`.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(128, 128)
        Widths of the hidden layers of the networks.
    n_models : int, default=2
        Networks trained per labeling (:math:`K \geq 2`).
    data_mode : {"same", "independent", "disjoint"}, default="same"
        What the networks of one labeling are trained on.

        - ``"same"``: every network sees the same minibatches in the same order; only the
          initialisation differs (the evaluation protocol of the paper).
        - ``"independent"``: each network draws its own data order every epoch.
        - ``"disjoint"``: the training points are split once into ``n_models`` parts of
          equal size (up to ``n_models - 1`` points are left out); network ``k`` trains on
          part ``k`` with minibatches of ``batch_size // n_models`` points, its share of
          every batch (as in the inner loop of task discovery). Random labelings then score
          about ``1 / n_classes``: the networks share no training label.

        With ``estimator``, ``"same"`` and ``"independent"`` both fit every clone on all
        training points (a scikit-learn estimator draws its data order from its
        ``random_state``), and ``"disjoint"`` fits clone ``k`` on part ``k``.
    max_epochs : int, default=60
        Passes over the training points.
    batch_size : int, default=100
        Minibatch size (clipped to the number of training points).
    learning_rate : float, default=1e-3
        Adam step size.
    test_size : float or int, default=0.25
        Held-out part of ``X`` on which agreement and test accuracy are measured: a
        fraction in (0, 1) (rounded down) or a number of points. The same split is used for
        every labeling.
    activation : {"relu", "tanh", "gelu", "identity"}, default="relu"
        Hidden-layer activation of the ``"mlp"`` networks.
    module : None, {"mlp", "cnn", "resnet"}, callable or torch.nn.Module, default=None
        Architecture of the networks. ``None`` or ``"mlp"``: an MLP of
        ``hidden_layer_sizes`` (inputs of any shape are flattened). ``"cnn"``: a small
        convolutional network (:class:`~sktaskmet.discovery.SmallCNN`) and ``"resnet"``:
        a small ResNet (:class:`~sktaskmet.discovery.SmallResNet`), for images ``X`` of
        shape (n_samples, channels, height, width), e.g. 8x8 digits or 32x32 images.
        A callable is called with no arguments and must return a fresh
        :class:`torch.nn.Module` whose output has as many logits as the labelings have
        classes; a module is deep-copied and re-initialised (``reset_parameters`` of every
        layer) for every network. BatchNorm running statistics are kept per network and
        dropout draws independently per network.
    mixed_precision : {None, "bf16", "fp16"}, default=None
        Run the forward passes under :func:`torch.autocast` in bfloat16 or float16 (with
        loss scaling) while parameters and optimiser stay in the dtype of ``X``. Meant for
        CUDA; on the CPU ``"bf16"`` works (slowly on most processors) and ``"fp16"`` raises
        a ValueError.
    memory_limit : int or None, default=None
        Bytes of device memory one ensemble may use. The labelings are trained in chunks
        whose networks fit, from an estimate made before anything is allocated (parameters,
        gradients, Adam moments and the activations of one batch). ``None`` allows 80% of
        the device's free memory (of the available RAM on the CPU). A MemoryError is raised
        when the ``n_models`` networks of a single labeling do not fit.
    estimator : scikit-learn classifier or None, default=None
        A classifier with a ``random_state`` parameter used instead of the networks.
    n_jobs : int or None, default=None
        Workers of :class:`joblib.Parallel` (``None`` means 1 unless in a
        :func:`joblib.parallel_backend` context, so a dask or ray backend scales it out).
        With ``estimator``, its clones are fitted in parallel; with networks, the
        labelings are split into at least as many chunks as workers, each chunk trained as
        one ensemble. The scores do not depend on the chunking: a network's initial
        weights and data order depend only on its model index (dropout masks, drawn per
        chunk, are the exception).
    device : str or torch.device, default="auto"
        Where the networks are trained: ``"auto"`` (CUDA when available), ``"cpu"``,
        ``"cuda"``, ``"cuda:N"``.
    random_state : int, RandomState instance or None, default=None
        Seeds the held-out split, the initialisations and the data orders.
    verbose : int, default=0
        When positive, prints the mean training loss of every epoch and, when the
        labelings are trained in several chunks (``memory_limit``, ``n_jobs``) or with
        ``estimator``, a progress line as each chunk or classifier finishes. With
        scikit-learn >= 1.9, ``set_callbacks`` (e.g. ``ProgressBar``, ``ScoringMonitor``)
        follows the epochs of a fit trained as one ensemble, or the chunks otherwise.

    Attributes
    ----------
    agreement_scores_ : ndarray of shape (n_tasks,)
        Agreement score of each labeling on the held-out points.
    agreement_score_ : float
        Mean of ``agreement_scores_``.
    train_accuracies_ : ndarray of shape (n_tasks, n_models)
        Accuracy of each network on its labeling over the training points.
    test_accuracies_ : ndarray of shape (n_tasks, n_models)
        Accuracy of each network on its labeling over the held-out points.
    classes_ : list of ndarray
        Class labels of each labeling.
    n_tasks_ : int
        Number of labelings (columns of ``y``).
    input_shape_ : tuple of int
        Shape of one sample of ``X``.
    train_indices_, test_indices_ : ndarray of int
        Rows of ``X`` used for training and held out.
    ensemble_state_ : dict of str to ndarray or None
        Parameters of the networks as numpy arrays stacked along a first axis of size
        ``n_tasks * n_models`` (network ``k`` of labeling ``t`` at ``t * n_models + k``), so a
        model fitted on a GPU pickles and scores on a CPU. ``None`` with ``estimator``.
    estimators_ : list of list of estimators or None
        ``estimators_[t][k]``: clone ``k`` fitted on labeling ``t``; ``None`` without
        ``estimator``.
    loss_curve_ : list of float
        Mean training loss of the networks at each epoch (empty with ``estimator``).
    n_iter_ : int
        Epochs run.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    sktaskmet.model_selection.AdversarialSplit : Train/test split implied by a labeling.

    References
    ----------
    A. Atanov, A. Filatov, T. Yeo, A. Sohmshetty and A. Zamir, "Task Discovery: Finding the
    Tasks that Neural Networks Generalize on", NeurIPS 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from sktaskmet import AgreementScorer
    >>> X, y = load_digits(return_X_y=True)
    >>> X = (X / 16).astype(np.float32)
    >>> human = (y >= 5).astype(int)
    >>> random = np.random.RandomState(0).randint(0, 2, len(y))
    >>> scorer = AgreementScorer(hidden_layer_sizes=(32,), max_epochs=5, device="cpu",
    ...                          random_state=0)
    >>> scorer.fit(X, np.column_stack([human, random])).agreement_scores_.round(1)
    array([0.9, 0.8])
    """

    _parameter_constraints = {
        "hidden_layer_sizes": ["array-like"],
        "n_models": [Interval(Integral, 2, None, closed="left")],
        "data_mode": [StrOptions(set(DATA_MODES))],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "test_size": [
            Interval(RealNotInt, 0, 1, closed="neither"),
            Interval(Integral, 1, None, closed="left"),
        ],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "module": [None, StrOptions(set(BUILTIN_MODULES)), callable],
        "mixed_precision": [None, StrOptions({"bf16", "fp16"})],
        "memory_limit": [Interval(Integral, 1, None, closed="left"), None],
        "estimator": [HasMethods(["fit", "predict"]), None],
        "n_jobs": [Integral, None],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        hidden_layer_sizes=(128, 128),
        n_models=2,
        data_mode="same",
        max_epochs=60,
        batch_size=100,
        learning_rate=1e-3,
        test_size=0.25,
        activation="relu",
        module=None,
        mixed_precision=None,
        memory_limit=None,
        estimator=None,
        n_jobs=None,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.n_models = n_models
        self.data_mode = data_mode
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.test_size = test_size
        self.activation = activation
        self.module = module
        self.mixed_precision = mixed_precision
        self.memory_limit = memory_limit
        self.estimator = estimator
        self.n_jobs = n_jobs
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        return tags

    # ------------------------------------------------------------------ fit

    @fit_guard
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train ``n_models`` networks per labeling and score their agreement.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs (float32 input trains in float32, anything else in float64).
        y : array-like of shape (n_samples,) or (n_samples, n_tasks)
            One labeling, or one labeling per column. Each labeling needs at least two
            classes.

        Returns
        -------
        self : AgreementScorer
            The fitted scorer.
        """
        hidden = check_hidden_layer_sizes(self.hidden_layer_sizes)
        X, y = validate_data(
            self,
            X,
            y,
            reset=True,
            multi_output=True,
            dtype=[np.float64, np.float32],
            ensure_min_samples=2,
            allow_nd=True,
        )
        self.input_shape_ = tuple(X.shape[1:])
        labelings, self.classes_ = self._encode_labelings(y)
        n_samples, n_tasks = labelings.shape
        self.n_tasks_ = n_tasks

        seed = seed_from_random_state(self.random_state)
        rng = np.random.RandomState(seed % (2**32))
        self.train_indices_, self.test_indices_ = self._split(n_samples, rng)
        model_seeds = rng.randint(0, 2**31 - 1, size=self.n_models)
        order_seed = int(rng.randint(0, 2**31 - 1))
        for t in range(n_tasks):
            if np.unique(labelings[self.train_indices_, t]).size < 2:
                raise ValueError(
                    f"Labeling {t} (column {t} of y) has a single class among the "
                    f"{self.train_indices_.size} training points; lower test_size or pass "
                    "more points."
                )

        callbacks = FitCallbacks(self, X, y, fitted_attributes=self._fitted_state)
        if self.estimator is None:
            self.estimators_ = None
            predictions = self._fit_networks(
                X, labelings, hidden, model_seeds, order_seed, callbacks
            )
        else:
            predictions = self._fit_estimators(X, labelings, model_seeds, callbacks)
            self.loss_curve_ = []
            self.n_iter_ = 0

        train_pred = predictions[:, :, self.train_indices_]
        test_pred = predictions[:, :, self.test_indices_]
        truth = labelings.T[:, None, :]
        self.train_accuracies_ = (train_pred == truth[:, :, self.train_indices_]).mean(axis=2)
        self.test_accuracies_ = (test_pred == truth[:, :, self.test_indices_]).mean(axis=2)
        self.agreement_scores_ = _agreement_numpy(test_pred)
        self.agreement_score_ = float(self.agreement_scores_.mean())
        return self

    def _encode_labelings(self, y):
        target_type = type_of_target(y, input_name="y")
        if target_type == "unknown":
            raise ValueError(
                "Unknown label type: y must hold class labels (ints or strings), one "
                "labeling per column."
            )
        if target_type not in _LABEL_TARGETS:
            raise ValueError(
                "y must hold class labels (one labeling per column); got a target of type "
                f"{target_type!r}. Continuous targets have no agreement score."
            )
        y = np.asarray(y)
        if y.ndim == 1:
            y = y[:, None]
        classes, columns = [], []
        for t in range(y.shape[1]):
            labels, encoded = np.unique(y[:, t], return_inverse=True)
            if labels.size < 2:
                raise ValueError(
                    f"Labeling {t} (column {t} of y) has a single class {labels[0]!r}; a "
                    "labeling needs at least two classes."
                )
            classes.append(labels)
            columns.append(encoded.reshape(-1))
        return np.column_stack(columns).astype(np.int64), classes

    def _split(self, n_samples, rng):
        if isinstance(self.test_size, Integral):
            n_test = int(self.test_size)
        else:
            n_test = int(np.floor(self.test_size * n_samples))
        if n_test < 1:
            raise ValueError(
                f"test_size={self.test_size!r} leaves no held-out point among {n_samples} "
                "samples; the agreement is measured on held-out points, so raise test_size."
            )
        n_train = n_samples - n_test
        needed = self.n_models if self.data_mode == "disjoint" else 2
        if n_train < needed:
            raise ValueError(
                f"test_size={self.test_size!r} leaves {n_train} training point(s) among "
                f"{n_samples} samples; at least {needed} are needed."
            )
        order = rng.permutation(n_samples)
        return np.sort(order[:n_train]), np.sort(order[n_train:])

    def _fit_networks(self, X, labelings, hidden, model_seeds, order_seed, callbacks):
        device = resolve_device(self.device)
        n_samples, n_tasks = labelings.shape
        # Kept for predictions: these parameters may be changed by set_params after fit.
        self._architecture = (self.module, hidden, self.activation, self.mixed_precision)
        build, autocast = self._network_builder(device)
        batch_size = min(int(self.batch_size), self.train_indices_.size)
        dtype = torch_dtype(X.dtype)
        chunks = self._plan_chunks(build, batch_size, dtype, device, effective_n_jobs(self.n_jobs))
        logit_mask = self._logit_mask(device, dtype, self.n_models)
        config = dict(
            n_models=self.n_models,
            batch_size=batch_size,
            data_mode=self.data_mode,
            order_seed=order_seed,
            max_epochs=self.max_epochs,
            learning_rate=self.learning_rate,
            verbose=self.verbose,
        )

        train_indices, n_models = self.train_indices_, self.n_models

        # A closure over local values only: joblib workers receive no estimator.
        def job(chunk, chunk_callbacks=None):
            return _train_chunk(
                build,
                autocast,
                np.tile(model_seeds, len(chunk)),
                X,
                labelings[:, chunk],
                train_indices,
                _rows(logit_mask, chunk, n_models),
                dict(config, name=_chunk_name(chunk, n_tasks)),
                device,
                chunk_callbacks,
            )

        if len(chunks) == 1:
            # One ensemble trained here: the callbacks follow its epochs.
            results = [job(chunks[0], callbacks)]
        else:
            # Several ensembles (memory chunks or joblib workers): one task per chunk.
            jobs = (delayed(job)(chunk) for chunk in chunks)
            parallel = Parallel(n_jobs=self.n_jobs, return_as="generator")
            sizes = [len(chunk) for chunk in chunks]
            results = _report_progress(parallel(jobs), sizes, "labelings", self, callbacks)
        self._store_networks(results)
        if len(chunks) > 1:
            callbacks.end_fit()
        predictions = np.concatenate([pred for _, _, pred in results])
        return predictions.reshape(n_tasks, self.n_models, n_samples)

    def _store_networks(self, results):
        """Fitted ensemble state and loss curve from the ``_train_chunk`` results."""
        # Chunks stop early only on a non-finite loss: keep the epochs that all of them ran.
        n_epochs = min(curve.shape[0] for _, curve, _ in results)
        curves = np.concatenate([curve[:n_epochs] for _, curve, _ in results], axis=1)
        self.loss_curve_ = [float(v) for v in curves.mean(axis=1)] if n_epochs else []
        self.n_iter_ = len(self.loss_curve_)
        self.ensemble_state_ = {
            name: np.concatenate([state[name] for state, _, _ in results]) for name in results[0][0]
        }

    def _fitted_state(self):
        """Fitted attributes that ``predict_members`` needs, for scikit-learn callbacks."""
        return {"ensemble_state_": self.ensemble_state_, "estimators_": self.estimators_}

    def _network_builder(self, device):
        """Builder of one fitted network and the autocast dtype, from the fitted architecture."""
        module, hidden, activation, mixed_precision = self._architecture
        n_out = int(max(c.size for c in self.classes_))
        build = module_builder(module, self.input_shape_, n_out, hidden, activation)
        with seeded(0):
            probe = build()
        width = output_width(probe, self.input_shape_)
        if width != n_out:
            raise ValueError(
                f"module: the network maps a sample of shape {self.input_shape_} to {width} "
                f"outputs; the labelings need {n_out} (their largest number of classes)."
            )
        return build, autocast_dtype(mixed_precision, device)

    def _plan_chunks(self, build, batch_size, dtype, device, n_workers):
        per_member = member_bytes(build, self.input_shape_, batch_size, dtype)
        limit = self.memory_limit
        if limit is None:
            limit = int(MEMORY_FRACTION * available_memory(device))
        return plan_chunks(self.n_tasks_, self.n_models, per_member, limit, n_workers)

    def _logit_mask(self, device, dtype, n_models):
        n_classes = np.array([c.size for c in self.classes_])
        return _logit_mask(n_classes, n_models, dtype, device)

    def _fit_estimators(self, X, labelings, model_seeds, callbacks):
        n_tasks = labelings.shape[1]
        if "random_state" not in self.estimator.get_params():
            raise ValueError(
                f"estimator {type(self.estimator).__name__} has no random_state parameter; "
                "the agreement score needs models that differ only by their seed."
            )
        train = self.train_indices_
        if self.data_mode == "disjoint":
            part = train.size // self.n_models
            shuffled = np.random.RandomState(int(model_seeds[0])).permutation(train)
            rows = [np.sort(shuffled[k * part : (k + 1) * part]) for k in range(self.n_models)]
        else:
            rows = [train] * self.n_models
        jobs = (
            delayed(_fit_clone)(
                self.estimator, int(model_seeds[k]), X[rows[k]], labelings[rows[k], t]
            )
            for t in range(n_tasks)
            for k in range(self.n_models)
        )
        parallel = Parallel(n_jobs=self.n_jobs, verbose=self.verbose, return_as="generator")
        sizes = [1] * (n_tasks * self.n_models)
        fitted = _report_progress(parallel(jobs), sizes, "classifiers", self, callbacks)
        self.estimators_ = [
            fitted[t * self.n_models : (t + 1) * self.n_models] for t in range(n_tasks)
        ]
        self.ensemble_state_ = None
        callbacks.end_fit()
        return self._estimator_predictions(X)

    # ------------------------------------------------------------------ scoring

    def _estimator_predictions(self, X):
        return np.stack(
            [np.stack([np.asarray(est.predict(X)) for est in row]) for row in self.estimators_]
        )

    def _network_predictions(self, X):
        device = resolve_device(self.device)
        build, autocast = self._network_builder(device)
        dtype = torch_dtype(X.dtype)
        n_models = self._n_models_fitted
        mask = self._logit_mask(device, dtype, n_models)
        x = to_tensor(X, device)
        parts = []
        # Forward passes of 2 batch_size points without gradients need at most the memory of
        # a training step, so the training plan bounds prediction too.
        batch_size = min(self.batch_size, self.train_indices_.size)
        for chunk in self._plan_chunks(build, batch_size, dtype, device, 1):
            rows = slice(chunk.start * n_models, chunk.stop * n_models)
            ensemble = ModuleEnsemble(
                build,
                [0] * (rows.stop - rows.start),
                dtype=dtype,
                device=device,
                autocast=autocast,
                sample_ndim=len(self.input_shape_),
            )
            state = {name: value[rows] for name, value in self.ensemble_state_.items()}
            ensemble.load_state_numpy(state, device, dtype)
            chunk_mask = None if mask is None else mask[rows]
            parts.append(to_numpy(ensemble.predict(x, chunk_mask, chunk_size=2 * batch_size)))
        return np.concatenate(parts).reshape(self.n_tasks_, n_models, len(X))

    @property
    def _n_models_fitted(self):
        # Networks per labeling in the fitted ensemble (n_models may be changed after fit).
        return len(next(iter(self.ensemble_state_.values()))) // self.n_tasks_

    def predict_members(self, X):
        """Predictions of every fitted network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        predictions : ndarray of shape (n_tasks, n_models, n_samples)
            ``predictions[t, k]``: labels (from ``classes_[t]``) predicted by network ``k``
            of labeling ``t``.
        """
        check_is_fitted(self, "ensemble_state_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32], allow_nd=True)
        if tuple(X.shape[1:]) != self.input_shape_:
            raise ValueError(
                f"X has samples of shape {tuple(X.shape[1:])}, but AgreementScorer was fitted "
                f"on samples of shape {self.input_shape_}."
            )
        if self.estimators_ is not None:
            return self._estimator_predictions(X)
        encoded = self._network_predictions(X)
        return np.stack([np.asarray(self.classes_[t])[encoded[t]] for t in range(self.n_tasks_)])

    def agreement(self, X):
        """Agreement score of each labeling's networks on new inputs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_tasks,)
        """
        return _agreement_numpy(self.predict_members(X))

    def score(self, X, y=None):
        """Mean agreement score of the fitted networks on ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored: the agreement score needs no labels.

        Returns
        -------
        score : float
            Fraction of points of ``X`` on which two networks of the same labeling agree,
            averaged over network pairs and labelings.
        """
        return float(self.agreement(X).mean())


def _train_chunk(
    build, autocast, seeds, X, labelings, train_indices, logit_mask, config, device, callbacks=None
):
    """Train the networks of some labelings as one ensemble (a joblib task).

    Returns the ensemble's stacked state, its loss curve of shape (n_epochs, n_members) and
    its encoded predictions on all of ``X``, of shape (n_members, n_samples). The data
    orders depend on ``order_seed`` and the model index only, so a labeling's networks are
    the same whichever chunk (or worker) trains them. ``callbacks`` (the estimator's
    :class:`~sktaskmet._training.FitCallbacks`, when this ensemble is the whole fit) follow
    the epochs, with the current networks as the fitted state.
    """
    n_models = config["n_models"]
    n_members = len(seeds)
    ensemble = ModuleEnsemble(
        build,
        seeds,
        dtype=torch_dtype(X.dtype),
        device=device,
        autocast=autocast,
        sample_ndim=X.ndim - 1,
    )
    if callbacks is not None:
        callbacks = FitCallbacks(
            callbacks.estimator,
            callbacks.X,
            callbacks.y,
            fitted_attributes=lambda: {"ensemble_state_": ensemble.state_numpy()},
        )
    X_all = to_tensor(X, device)
    train = to_tensor(train_indices, device)
    next_epoch = batch_schedule(
        train.numel(),
        n_models,
        n_members,
        config["batch_size"],
        config["data_mode"],
        make_generator(config["order_seed"], device),
        device,
    )
    loss_curve = train_ensemble(
        ensemble,
        X_all[train],
        to_tensor(labelings, device)[train],
        torch.arange(n_members, device=device) // n_models,
        next_epoch,
        config["max_epochs"],
        config["learning_rate"],
        verbose=config["verbose"],
        logit_mask=logit_mask,
        seed=config["order_seed"],
        name=config["name"],
        callbacks=callbacks,
    )
    predictions = ensemble.predict(X_all, logit_mask, chunk_size=2 * config["batch_size"])
    return ensemble.state_numpy(), loss_curve, to_numpy(predictions)


def _chunk_name(chunk, n_tasks):
    """Name of a chunk's training loop in ``verbose`` lines and warnings."""
    if len(chunk) == n_tasks:
        return "AgreementScorer"
    return f"AgreementScorer, labelings {chunk.start}-{chunk.stop - 1}"


def _report_progress(results, sizes, unit, estimator, callbacks):
    """Collect the results of a long parallel run, reporting progress as they arrive.

    Each result is one task of the estimator's ``fit`` for scikit-learn callbacks (a
    :class:`~sklearn.callback.ProgressBar` advances by one per result) and, with
    ``verbose``, a line ``[AgreementScorer] 48/160 labelings trained (12.3 s)``.

    Parameters
    ----------
    results : iterable
        The results in order (e.g. a :class:`joblib.Parallel` generator).
    sizes : list of int
        How many ``unit`` each result covers.
    unit : str
        What is counted ("labelings", "classifiers").
    estimator : AgreementScorer
    callbacks : FitCallbacks
        Opened here with one task per result; the caller closes the fit.

    Returns
    -------
    list
    """
    callbacks.begin_fit(len(sizes))
    collected, done, start = [], 0, time.perf_counter()
    total = sum(sizes)
    for result, size in zip(results, sizes, strict=True):
        context = callbacks.begin_step()
        collected.append(result)
        done += size
        # A part of the ensemble is no fitted model: the task closes without one.
        callbacks.end_step(context, finished=False)
        if estimator.verbose:
            elapsed = time.perf_counter() - start
            print(f"[AgreementScorer] {done}/{total} {unit} trained ({elapsed:.1f} s)")
    return collected


def _rows(member_array, chunk, n_models):
    """Rows of the networks of labelings ``chunk`` in a (n_tasks * n_models, ...) array."""
    if member_array is None:
        return None
    return member_array[chunk.start * n_models : chunk.stop * n_models]


def _fit_clone(estimator, seed, X, y):
    return clone(estimator).set_params(random_state=seed).fit(X, y)


def _agreement_numpy(predictions):
    """Pairwise agreement of (n_tasks, n_models, n) predictions, averaged over pairs."""
    n_models = predictions.shape[1]
    pairs = list(combinations(range(n_models), 2))
    return np.mean(
        [(predictions[:, a] == predictions[:, b]).mean(axis=1) for a, b in pairs], axis=0
    )


def _logit_mask(n_classes, n_models, dtype, device):
    """-inf on the logits of classes a labeling does not have; None when all have as many."""
    if np.all(n_classes == n_classes.max()):
        return None
    mask = torch.zeros((n_classes.size, int(n_classes.max())), dtype=dtype, device=device)
    for t, c in enumerate(n_classes):
        mask[t, c:] = -torch.inf
    return mask.repeat_interleave(n_models, dim=0)[:, None, :]
