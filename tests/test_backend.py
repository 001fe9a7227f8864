"""Tests of sktaskmet._backend: devices, dtypes, conversions and seeding."""

import pickle
import warnings

import numpy as np
import pytest
import torch

from sktaskmet._backend import (
    RandomStreams,
    make_generator,
    resolve_device,
    seed_from_random_state,
    seeded,
    to_numpy,
    to_tensor,
    torch_dtype,
)


def test_resolve_device_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device().type == expected


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "", "cpu:abc"])
def test_resolve_device_rejects_unknown_strings(bad):
    with pytest.raises(ValueError, match="is not a device|expected 'auto'"):
        resolve_device(bad)


@pytest.mark.parametrize("bad", [0, 1.5, None, ["cpu"]])
def test_resolve_device_rejects_other_types(bad):
    with pytest.raises(TypeError, match="device must be"):
        resolve_device(bad)


def test_resolve_device_rejects_unsupported_device_types():
    with pytest.raises(ValueError, match="runs on the CPU or on CUDA"):
        resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
@pytest.mark.parametrize("asked", ["cuda", "cuda:0", torch.device("cuda", 1)])
def test_resolve_device_without_cuda_says_so(asked):
    with pytest.raises(ValueError, match=r"asks for CUDA.*is_available\(\) is False"):
        resolve_device(asked)


@pytest.mark.cuda
def test_resolve_device_with_cuda():
    assert resolve_device("cuda").type == "cuda"
    with pytest.raises(ValueError, match="only .* CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize(
    "np_dtype, expected",
    [(np.float64, torch.float64), (np.float32, torch.float32), (np.int64, torch.int64)],
)
def test_to_tensor_follows_the_input_dtype(np_dtype, expected):
    array = np.arange(6).reshape(2, 3).astype(np_dtype)
    tensor = to_tensor(array)
    assert tensor.dtype == expected
    np.testing.assert_array_equal(to_numpy(tensor), array)
    assert to_numpy(tensor).dtype == np_dtype


def test_to_tensor_explicit_dtype_and_tensor_input():
    tensor = to_tensor(np.ones(3), dtype=np.float32)
    assert tensor.dtype == torch.float32
    assert to_tensor(tensor, dtype=torch.float64).dtype == torch.float64
    assert torch_dtype(torch.float32) is torch.float32
    with pytest.raises(TypeError, match="no torch counterpart"):
        torch_dtype(np.complex128)


def test_to_tensor_read_only_non_contiguous_and_big_endian_arrays():
    array = np.arange(12.0).reshape(3, 4)
    array.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensor = to_tensor(array)
        strided = to_tensor(array[:, ::2])
        swapped = to_tensor(np.arange(3.0).astype(">f8"))
    tensor += 1  # must not write into (or fail on) the user's read-only array
    np.testing.assert_array_equal(array, np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(to_numpy(strided), array[:, ::2])
    np.testing.assert_array_equal(to_numpy(swapped), [0.0, 1.0, 2.0])


def test_to_numpy_never_aliases_the_tensor():
    tensor = torch.zeros(3)
    array = to_numpy(tensor)
    tensor += 1
    np.testing.assert_array_equal(array, 0.0)
    parameter = torch.nn.Parameter(torch.ones(2))
    assert to_numpy(parameter * 2).tolist() == [2.0, 2.0]
    assert to_numpy(torch.ones(2, dtype=torch.bfloat16)).dtype == np.float32


def test_generators_are_deterministic_and_differ_across_seeds():
    a = torch.rand(5, generator=make_generator(0))
    b = torch.rand(5, generator=make_generator(0))
    c = torch.rand(5, generator=make_generator(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert seed_from_random_state(np.int64(3)) == seed_from_random_state(3)


def test_generator_from_random_state_instance_advances_it():
    rng = np.random.RandomState(0)
    first, second = seed_from_random_state(rng), seed_from_random_state(rng)
    assert first != second
    assert seed_from_random_state(np.random.RandomState(0)) == first


def test_seeded_is_reproducible_and_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7):
        first = torch.nn.Linear(4, 2)
    with seeded(7):
        second = torch.nn.Linear(4, 2)
    assert torch.equal(first.weight, second.weight)
    # The global stream continues as if the blocks never ran.
    assert torch.equal(torch.rand(3), expected_next)


def test_generator_and_converted_arrays_pickle():
    array = to_numpy(to_tensor(np.arange(3.0)))
    assert np.array_equal(pickle.loads(pickle.dumps(array)), array)


def test_numpy_state_round_trip_and_make_mlp():
    from sktaskmet._backend import load_numpy_state, state_to_numpy
    from sktaskmet._nn import make_mlp

    with seeded(0):
        network = make_mlp(3, (4, 5), 2, activation="tanh")
    state = state_to_numpy(network)
    assert all(isinstance(v, np.ndarray) for v in state.values())
    restored = pickle.loads(pickle.dumps(state))
    with seeded(1):
        other = make_mlp(3, (4, 5), 2, activation="tanh")
    other = load_numpy_state(other, restored, device="cpu", dtype=np.float64)
    x = torch.randn(6, 3, dtype=torch.float64)
    np.testing.assert_allclose(to_numpy(other(x)), to_numpy(network.double()(x)), rtol=1e-12)
    assert len(make_mlp(2, (), 1)) == 1
    with pytest.raises(ValueError, match="activation must be one of"):
        make_mlp(2, (3,), 1, activation="swish")


def test_load_numpy_state_keeps_float64_precision():
    from sktaskmet._backend import load_numpy_state, state_to_numpy

    with seeded(0):
        saved = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        saved.weight.add_(1e-12)  # below float32 resolution
    fresh = torch.nn.Linear(3, 2)  # float32, as a module rebuilt at predict time
    restored = load_numpy_state(fresh, state_to_numpy(saved), dtype=np.float64)
    assert restored.weight.dtype == torch.float64
    assert torch.equal(restored.weight, saved.weight)


# --------------------------------------------------------------------------------------
# RandomStreams: named, independent streams from one random_state
# --------------------------------------------------------------------------------------


def test_random_streams_are_reproducible_and_keyed_by_name_not_order():
    a = RandomStreams(3)
    b = RandomStreams(3)
    first = b.numpy("batches").randint(0, 2**31, size=8)  # other streams made first ...
    split_b = b.numpy("split").permutation(20)
    split_a = a.numpy("split").permutation(20)  # ... do not shift this one
    np.testing.assert_array_equal(split_a, split_b)
    np.testing.assert_array_equal(first, RandomStreams(3).numpy("batches").randint(0, 2**31, 8))
    torch.testing.assert_close(
        torch.rand(5, generator=a.torch("batches")),
        torch.rand(5, generator=b.torch("batches")),
        rtol=0,
        atol=0,
    )


def test_random_streams_of_different_names_or_seeds_differ():
    streams = RandomStreams(0)
    # Two torch generators seeded from one int are the same stream; named streams are not.
    x = torch.rand(6, generator=streams.torch("a"))
    y = torch.rand(6, generator=streams.torch("b"))
    assert not torch.equal(x, y)
    assert streams.seed("a") != streams.seed("b")
    assert RandomStreams(0).seed("a") != RandomStreams(1).seed("a")
    assert not np.array_equal(
        streams.numpy("a").permutation(10), streams.numpy("b").permutation(10)
    )


def test_random_streams_from_a_random_state_advance_it_once():
    rng = np.random.RandomState(0)
    reference = np.random.RandomState(0)
    seed_from_random_state(reference)
    RandomStreams(rng)
    assert rng.randint(1000) == reference.randint(1000)
    assert isinstance(RandomStreams(None).seed("x"), int)


def test_random_streams_seeded_block_leaves_the_global_generator_alone():
    before = torch.random.get_rng_state()
    streams = RandomStreams(0)
    with streams.seeded("init"):
        a = torch.nn.Linear(3, 2).weight.detach().clone()
    with RandomStreams(0).seeded("init"):
        b = torch.nn.Linear(3, 2).weight.detach().clone()
    assert torch.equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert 0 <= streams.seed("init") < 2**63


def test_random_stream_names_must_be_strings():
    with pytest.raises(ValueError, match="non-empty string"):
        RandomStreams(0).seed("")
    with pytest.raises(ValueError, match="non-empty string"):
        RandomStreams(0).numpy(3)
