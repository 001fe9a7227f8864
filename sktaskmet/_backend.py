"""Devices, dtypes, random generators and the numpy <-> torch boundary.

Every estimator in sktaskmet keeps its public inputs and fitted state in numpy and does its
heavy numerics in torch. This module is the one place where the two meet:

* :func:`resolve_device` turns the ``device`` parameter of an estimator into a
  :class:`torch.device`, at ``fit``/``predict`` time (never in ``__init__``), with a clear
  error when CUDA is asked for but absent.
* :func:`to_tensor` / :func:`to_numpy` convert arrays. The torch dtype follows the numpy
  dtype (float64 stays float64, float32 stays float32) and read-only arrays are copied
  instead of triggering torch's non-writable-array warning. :func:`to_numpy` returns
  arrays that own their memory, so fitted attributes never alias live parameters.
* :class:`RandomStreams` is the factory of randomness: named, independent numpy and torch
  streams from one ``random_state``. :func:`make_generator` and :func:`seeded` derive
  torch randomness from a scikit-learn ``random_state`` without touching torch's global
  generator (estimators that have not moved to :class:`RandomStreams` yet use them), and
  :func:`untouched_global_rng` keeps the rebuilding of fitted modules at inference time
  from advancing it.
* :func:`autocast_dtype` / :func:`autocast` turn a ``mixed_precision`` parameter into
  :func:`torch.autocast` regions, refusing float16 off CUDA.
"""

import contextlib
import numbers
import threading

import numpy as np
import torch
from sklearn.utils import check_random_state

__all__ = [
    "resolve_device",
    "torch_dtype",
    "to_tensor",
    "to_numpy",
    "seed_from_random_state",
    "make_generator",
    "seeded",
    "RandomStreams",
    "untouched_global_rng",
    "state_to_numpy",
    "load_numpy_state",
]

_VALID_DEVICE_TEXT = "'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device"

_NUMPY_TO_TORCH = {
    np.dtype(np.float64): torch.float64,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.bool_): torch.bool,
}


def resolve_device(device="auto"):
    """Turn an estimator's ``device`` parameter into a :class:`torch.device`.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}, str of the form "cuda:N", or torch.device
        ``"auto"`` picks the first CUDA device when torch sees one and the CPU otherwise.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If the string is not a device, names a device type other than CPU or CUDA, or asks
        for CUDA (or a CUDA index) that this machine does not have.
    TypeError
        If ``device`` is neither a string nor a :class:`torch.device`.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif isinstance(device, str):
        if device == "auto":
            return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        try:
            resolved = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(
                f"device={device!r} is not a device; expected {_VALID_DEVICE_TEXT}."
            ) from exc
    else:
        raise TypeError(
            f"device must be {_VALID_DEVICE_TEXT}; got {type(device).__name__} {device!r}."
        )

    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise ValueError(
            f"device={device!r} is a {resolved.type!r} device; sktaskmet runs on the CPU or on "
            f"CUDA, so use {_VALID_DEVICE_TEXT}."
        )
    if not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} asks for CUDA, but torch.cuda.is_available() is False on this "
            f"machine (torch {torch.__version__}). Use device='cpu', or device='auto' to fall "
            "back to the CPU when no GPU is present."
        )
    if resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r} asks for CUDA device {resolved.index}, but only "
            f"{torch.cuda.device_count()} CUDA device(s) are visible."
        )
    return resolved


def torch_dtype(dtype):
    """The torch dtype that corresponds to a numpy dtype (or passes a torch dtype through).

    Parameters
    ----------
    dtype : numpy dtype, type or torch.dtype

    Returns
    -------
    torch.dtype
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    np_dtype = np.dtype(dtype)
    try:
        return _NUMPY_TO_TORCH[np_dtype]
    except KeyError:
        raise TypeError(f"numpy dtype {np_dtype} has no torch counterpart in sktaskmet.") from None


def autocast_dtype(mixed_precision, device):
    """The autocast dtype of a ``mixed_precision`` parameter on ``device``.

    Parameters
    ----------
    mixed_precision : {None, "bf16", "fp16"}
    device : torch.device

    Returns
    -------
    torch.dtype or None
        ``torch.bfloat16``, ``torch.float16``, or None for full precision.

    Raises
    ------
    ValueError
        For ``"fp16"`` off CUDA: CPU autocast in float16 is slow where it works at all, and
        its gradients need the loss scaling that only pays on a GPU.
    """
    if mixed_precision is None:
        return None
    if mixed_precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"mixed_precision='fp16' needs a CUDA device; got device {str(device)!r}. "
            "Use mixed_precision='bf16' on the CPU, or None."
        )
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]


def autocast(device, dtype):
    """A :func:`torch.autocast` region in ``dtype`` on ``device``; no-op when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def to_tensor(array, device="cpu", dtype=None):
    """Convert a numpy array (or tensor) to a torch tensor on ``device``.

    Parameters
    ----------
    array : array-like or torch.Tensor
        Numpy arrays keep their dtype unless ``dtype`` is given. Read-only and
        non-contiguous arrays are copied first, so torch never warns about them and never
        writes into a user's array.
    device : str or torch.device, default="cpu"
        Passed through :func:`resolve_device`.
    dtype : numpy dtype or torch.dtype, optional
        Target dtype. ``None`` keeps the array's dtype.

    Returns
    -------
    torch.Tensor
    """
    device = resolve_device(device)
    target = None if dtype is None else torch_dtype(dtype)
    if isinstance(array, torch.Tensor):
        return array.to(device=device, dtype=target or array.dtype)
    array = np.asarray(array)
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, order="C", copy=True)
    if array.dtype.byteorder not in ("=", "|"):
        array = array.astype(array.dtype.newbyteorder("="))
    tensor = torch.from_numpy(array)
    return tensor.to(device=device, dtype=target or tensor.dtype)


def to_numpy(tensor):
    """Convert a tensor to a numpy array that owns its memory.

    The result never shares memory with the tensor, so a fitted attribute stays what it was
    when the estimator keeps training its modules (warm starts, ``partial_fit``).

    Parameters
    ----------
    tensor : torch.Tensor

    Returns
    -------
    numpy.ndarray
    """
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    if tensor.device.type == "cpu":
        return tensor.numpy().copy()
    return tensor.cpu().numpy()


def seed_from_random_state(random_state):
    """Draw a 63-bit seed from a scikit-learn ``random_state``.

    Parameters
    ----------
    random_state : int, numpy.random.RandomState instance or None
        As in scikit-learn: an int gives a reproducible seed, a ``RandomState`` is advanced
        by one draw, ``None`` uses numpy's global generator.

    Returns
    -------
    int
    """
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        # The same int always gives the same seed, without a RandomState round trip.
        rng = np.random.RandomState(int(random_state) % (2**32))
    else:
        rng = check_random_state(random_state)
    return int(rng.randint(0, 2**31 - 1, dtype=np.int64)) * 2**31 + int(
        rng.randint(0, 2**31 - 1, dtype=np.int64)
    )


def make_generator(random_state, device="cpu"):
    """A seeded :class:`torch.Generator` derived from a scikit-learn ``random_state``.

    Parameters
    ----------
    random_state : int, numpy.random.RandomState instance or None
    device : str or torch.device, default="cpu"
        Device of the generator; sampling functions need a generator on the device where
        they draw.

    Returns
    -------
    torch.Generator
    """
    generator = torch.Generator(device=resolve_device(device))
    generator.manual_seed(seed_from_random_state(random_state))
    return generator


_SEEDED_LOCK = threading.RLock()


@contextlib.contextmanager
def seeded(random_state, device="cpu"):
    """Seed torch's CPU generator inside the block and restore it afterwards.

    Module constructors (``torch.nn.Linear`` and user callables that build a network) draw
    their initial weights from torch's global generator and take no ``generator=``
    argument. Building them inside this block makes the initialisation a function of
    ``random_state`` while leaving the caller's global random state exactly as it was.
    Build modules on the CPU inside the block and move them to the device afterwards.

    Parameters
    ----------
    random_state : int, numpy.random.RandomState instance or None
    device : str or torch.device, default="cpu"
        A CUDA device's generator is seeded and restored as well (random layers such as
        dropout draw from the generator of the device they run on).

    Examples
    --------
    >>> import torch
    >>> from sktaskmet._backend import seeded
    >>> with seeded(0):
    ...     a = torch.nn.Linear(3, 2)
    >>> with seeded(0):
    ...     b = torch.nn.Linear(3, 2)
    >>> bool(torch.equal(a.weight, b.weight))
    True
    """
    seed = seed_from_random_state(random_state)
    device = torch.device(device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    # The generator is global to the process: a thread that restored it while another is
    # inside its own block would change that block's draws (joblib's threading backend).
    with _SEEDED_LOCK, torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda:  # only the device asked for: other GPUs' generators stay as they are
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


@contextlib.contextmanager
def untouched_global_rng():
    """Leave torch's global CPU generator as it was before the block.

    Rebuilding a fitted module to load its saved state (in ``predict``, ``transform``,
    scoring) runs the constructors' random initialisation, which draws from torch's
    global generator; the drawn weights are overwritten at once. Building the module
    inside this block keeps inference from advancing the user's global random state.
    Build modules on the CPU inside the block and move them to the device afterwards.

    Examples
    --------
    >>> import torch
    >>> from sktaskmet._backend import untouched_global_rng
    >>> before = torch.random.get_rng_state()
    >>> with untouched_global_rng():
    ...     layer = torch.nn.Linear(3, 2)
    >>> bool(torch.equal(torch.random.get_rng_state(), before))
    True
    """
    with torch.random.fork_rng(devices=[]):
        yield


class RandomStreams:
    """Named, independent numpy and torch random streams from one ``random_state``.

    An estimator draws its randomness for different purposes (the validation split, the
    initial weights, the mini-batches, ...) from different streams, so that changing how
    many numbers one purpose draws never shifts another, and two streams are never the
    same sequence (as two generators seeded with the same int would be). The streams are
    children of one :class:`numpy.random.SeedSequence` whose entropy comes from
    ``random_state`` (:func:`seed_from_random_state`); the child of a stream is keyed by
    its name, so a stream does not depend on which other streams exist or their order.

    Parameters
    ----------
    random_state : int, numpy.random.RandomState instance or None
        As in scikit-learn. A ``RandomState`` is advanced by one draw when the streams
        are created; ``None`` draws fresh entropy from numpy's global generator.

    Examples
    --------
    >>> import torch
    >>> from sktaskmet._backend import RandomStreams
    >>> streams = RandomStreams(0)
    >>> split = streams.numpy("validation_split").permutation(5)
    >>> batches = streams.torch("batches")
    >>> with streams.seeded("init"):
    ...     layer = torch.nn.Linear(3, 2)
    >>> bool((RandomStreams(0).numpy("validation_split").permutation(5) == split).all())
    True
    """

    def __init__(self, random_state):
        self.entropy = seed_from_random_state(random_state)

    def _sequence(self, name):
        if not isinstance(name, str) or not name:
            raise ValueError(f"a random stream is named by a non-empty string; got {name!r}.")
        return np.random.SeedSequence(self.entropy, spawn_key=tuple(name.encode("utf-8")))

    def seed(self, name):
        """A 63-bit integer seed of the stream ``name``."""
        return int(self._sequence(name).generate_state(1, np.uint64)[0] >> np.uint64(1))

    def numpy(self, name):
        """The stream ``name`` as a :class:`numpy.random.RandomState` (scikit-learn's type)."""
        return np.random.RandomState(np.random.MT19937(self._sequence(name)))

    def torch(self, name, device="cpu"):
        """The stream ``name`` as a seeded :class:`torch.Generator` on ``device``."""
        generator = torch.Generator(device=resolve_device(device))
        generator.manual_seed(self.seed(name))
        return generator

    @contextlib.contextmanager
    def seeded(self, name):
        """Seed torch's global CPU generator from the stream ``name`` inside the block only.

        For module constructors, which draw their initial weights from torch's global
        generator; the caller's global state is restored afterwards (see :func:`seeded`).
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed(name))
            yield


def state_to_numpy(module):
    """A module's state dict as numpy arrays: what estimators keep as fitted state.

    Keeping numpy arrays rather than tensors means an estimator fitted on a GPU pickles and
    loads on a CPU-only machine, and can be moved to another device with
    ``set_params(device=...)`` after fitting.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    dict of str to numpy.ndarray
    """
    return {name: to_numpy(value) for name, value in module.state_dict().items()}


def load_numpy_state(module, state, device="cpu", dtype=None):
    """Load a state saved by :func:`state_to_numpy` into ``module`` and move it to ``device``.

    Parameters
    ----------
    module : torch.nn.Module
        A module of the same architecture as the saved one.
    state : dict of str to numpy.ndarray
    device : str or torch.device, default="cpu"
    dtype : numpy dtype or torch.dtype, optional
        Floating-point dtype of the parameters; defaults to the saved dtype.

    Returns
    -------
    torch.nn.Module
        ``module`` itself, loaded, on ``device``.
    """
    device = resolve_device(device)
    tensors = {name: to_tensor(value) for name, value in state.items()}
    # load_state_dict copies into the existing parameters' dtype: a freshly built module is
    # float32, so float64 state would be rounded before any later cast. Cast the module to
    # the saved floating dtype first, load, then cast to the requested dtype.
    saved = next((t.dtype for t in tensors.values() if t.is_floating_point()), None)
    if saved is not None:
        module = module.to(saved)
    module.load_state_dict(tensors)
    module = module.to(device)
    if dtype is not None:
        module = module.to(torch_dtype(dtype))
    return module
