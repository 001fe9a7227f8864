"""Networks of the agreement score and of task discovery: built-in ones and user modules.

The estimators accept a *module specification* for their networks:

* ``None`` or ``"mlp"``: a multi-layer perceptron from ``hidden_layer_sizes`` (inputs of any
  shape are flattened first);
* ``"cnn"``: :class:`SmallCNN`, three 3x3 convolutions with max-pooling and a global average
  pool, for images of shape (C, H, W) such as 8x8 digits or 32x32 CIFAR-like images;
* ``"resnet"``: :class:`SmallResNet`, a ResNet with three stages of one basic block each,
  for 32x32 images;
* a callable called with no arguments that returns a fresh :class:`torch.nn.Module`;
* a :class:`torch.nn.Module`, deep-copied and re-initialised (``reset_parameters`` of every
  layer) for every network.

:func:`module_builder` turns a specification into a zero-argument builder; the ensembles call
it once per member inside :func:`sktaskmet._backend.seeded`, so member ``m`` starts from the
weights that the same builder gives under the same seed when called alone.
"""

import copy
import math

import torch
from torch import nn

from .._nn import make_mlp

__all__ = [
    "BUILTIN_MODULES",
    "SmallCNN",
    "SmallResNet",
    "module_builder",
    "feature_builder",
    "check_vmappable",
    "output_width",
]

BUILTIN_MODULES = ("mlp", "cnn", "resnet")


class SmallCNN(nn.Module):
    """A small convolutional network for images of shape (C, H, W).

    ``features``: three blocks ``Conv3x3 -> ReLU -> MaxPool2`` (the pool is skipped once the
    map is 1 pixel wide, so 8x8 inputs work) with ``width``, ``2 width`` and ``4 width``
    channels, then a global average pool; ``head``: one linear layer. No normalisation
    layer, so members of an ensemble carry no buffers.

    Parameters
    ----------
    in_channels : int
    n_outputs : int
    image_size : int
        Height (and width) of the inputs; decides how many blocks pool.
    width : int, default=16
    """

    def __init__(self, in_channels, n_outputs, image_size, width=16):
        super().__init__()
        layers, channels, size = [], int(in_channels), int(image_size)
        for factor in (1, 2, 4):
            layers += [nn.Conv2d(channels, width * factor, 3, padding=1), nn.ReLU()]
            if size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            channels = width * factor
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, int(n_outputs))
        self.n_features = channels

    def forward(self, x):
        return self.head(self.features(x))


class _BasicBlock(nn.Module):
    """``x + F(x)`` with ``F = conv-norm-relu-conv-norm`` (a 1x1 projection when shapes change)."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.GroupNorm(_groups(out_channels), out_channels),
            )

    def forward(self, x):
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


def _groups(channels):
    return math.gcd(8, channels)


class SmallResNet(nn.Module):
    """A small ResNet for 32x32 images: a stem and three stages of one basic block.

    Stem ``Conv3x3(width) -> GroupNorm -> ReLU``; stages of ``width``, ``2 width`` and
    ``4 width`` channels (strides 1, 2, 2), a global average pool and a linear head. It
    normalises with :class:`torch.nn.GroupNorm` rather than BatchNorm: group statistics are
    per sample, so the members of a vmapped ensemble have no running statistics and a
    prediction does not depend on the other points of its batch.

    Parameters
    ----------
    in_channels : int
    n_outputs : int
    width : int, default=16
    """

    def __init__(self, in_channels, n_outputs, width=16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(int(in_channels), width, 3, 1, 1, bias=False),
            nn.GroupNorm(_groups(width), width),
            nn.ReLU(),
            _BasicBlock(width, width, 1),
            _BasicBlock(width, 2 * width, 2),
            _BasicBlock(2 * width, 4 * width, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, int(n_outputs))
        self.n_features = 4 * width

    def forward(self, x):
        return self.head(self.features(x))


def _image_shape(name, input_shape):
    if len(input_shape) != 3:
        raise ValueError(
            f"module={name!r} needs images: X of shape (n_samples, channels, height, width); "
            f"got samples of shape {tuple(input_shape)}. Reshape X (e.g. digits as "
            "(n, 1, 8, 8)) or use module='mlp'."
        )
    return input_shape


def _builtin(name, input_shape, n_outputs, hidden_layer_sizes, activation):
    if name == "mlp":
        mlp = make_mlp(math.prod(input_shape), hidden_layer_sizes, n_outputs, activation)
        return mlp if len(input_shape) == 1 else nn.Sequential(nn.Flatten(), *mlp)
    channels, height, _ = _image_shape(name, input_shape)
    if name == "cnn":
        return SmallCNN(channels, n_outputs, height)
    return SmallResNet(channels, n_outputs)


def reinitialise(module):
    """A deep copy of ``module`` with every layer's ``reset_parameters()`` called.

    Raises
    ------
    ValueError
        If a layer owns parameters but has no ``reset_parameters`` method (its new initial
        values would be unknown); the message names the layer.
    """
    module = copy.deepcopy(module)
    for name, layer in module.named_modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
        elif any(True for _ in layer.parameters(recurse=False)):
            raise ValueError(
                f"module: layer {name or '<root>'!r} ({type(layer).__name__}) has parameters "
                "but no reset_parameters() method, so it cannot be re-initialised per "
                "network; pass a callable that builds a fresh module instead."
            )
    return module


def module_builder(module, input_shape, n_outputs, hidden_layer_sizes=(), activation="relu"):
    """A zero-argument callable that builds one fresh network of the specification.

    Parameters
    ----------
    module : None, {"mlp", "cnn", "resnet"}, callable or torch.nn.Module
        See the module docstring.
    input_shape : tuple of int
        Shape of one sample.
    n_outputs : int
        Logits of a built-in network (a user's module must output that many).
    hidden_layer_sizes : tuple of int, default=()
        Hidden layers of the ``"mlp"`` network.
    activation : str, default="relu"
        Activation of the ``"mlp"`` network.

    Returns
    -------
    callable
    """
    if module is None or isinstance(module, str):
        name = "mlp" if module is None else module
        if name not in BUILTIN_MODULES:
            raise ValueError(f"module must be one of {BUILTIN_MODULES}; got {module!r}.")
        return lambda: _builtin(name, tuple(input_shape), n_outputs, hidden_layer_sizes, activation)
    if isinstance(module, nn.Module):
        return lambda: reinitialise(module)
    if callable(module):
        return lambda: _call_factory(module)
    raise TypeError(
        "module must be None, one of 'mlp', 'cnn', 'resnet', a callable returning a "
        f"torch.nn.Module or a torch.nn.Module; got {type(module).__name__}."
    )


def _call_factory(factory):
    built = factory()
    if not isinstance(built, nn.Module):
        raise TypeError(
            f"module: the callable must return a torch.nn.Module; it returned "
            f"{type(built).__name__}."
        )
    return built


def feature_builder(module, input_shape, hidden_layer_sizes=()):
    """A zero-argument builder of the *backbone* of a task encoder (no classification head).

    ``None``/``"mlp"``: the MLP of ``hidden_layer_sizes`` up to its last hidden layer (with
    its ReLU); ``"cnn"``/``"resnet"``: the network's ``features``; a callable or a module:
    used as given (its output, flattened, is the feature vector).
    """
    if module is None or module == "mlp":
        hidden = tuple(hidden_layer_sizes)
        n_in = math.prod(input_shape)

        def build_mlp():
            if not hidden:
                return nn.Flatten()
            body = nn.Sequential(make_mlp(n_in, hidden[:-1], hidden[-1]), nn.ReLU())
            return body if len(input_shape) == 1 else nn.Sequential(nn.Flatten(), body)

        return build_mlp
    if isinstance(module, str):
        build = module_builder(module, input_shape, 1)
        return lambda: build().features
    build = module_builder(module, input_shape, 1)
    return lambda: nn.Sequential(build(), nn.Flatten())


def output_width(module, input_shape, dtype=torch.float32):
    """Width of ``module``'s flattened output on one sample (run on the meta device)."""
    meta = copy.deepcopy(module).to("meta")
    was_training = meta.training
    meta.eval()  # a batch of 1 is not enough for batch statistics
    out = meta(torch.empty((1, *input_shape), device="meta", dtype=dtype))
    meta.train(was_training)
    return int(math.prod(out.shape[1:]))


def check_vmappable(module, where, allow_running_stats=True, allow_dropout=True):
    """Refuse layers an ensemble cannot batch, with a message naming the layer.

    Parameters
    ----------
    module : torch.nn.Module
    where : str
        Parameter name used in the messages.
    allow_running_stats : bool
        Whether BatchNorm running statistics are allowed (kept per member).
    allow_dropout : bool
        Whether dropout is allowed (drawn independently per member).
    """
    for name, layer in module.named_modules():
        label = f"{name or '<root>'!r} ({type(layer).__name__})"
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.track_running_stats:
            if not allow_running_stats:
                raise ValueError(
                    f"{where}: layer {label} tracks running statistics, which the unrolled "
                    "inner loop cannot batch over networks; build it with "
                    "track_running_stats=False or use GroupNorm."
                )
        if isinstance(layer, nn.modules.dropout._DropoutNd) and not allow_dropout:
            raise ValueError(
                f"{where}: layer {label} is random; the unrolled inner loop must be "
                "deterministic to be differentiated, so remove dropout from the learners."
            )
