"""Seeded fits give bit-identical outputs to the stored reference.

The reference (``tests/data/seeded_fits.npz``) is written by ``python -m tests.seeded_fits``;
a refactoring must leave every array exactly equal, so fitted models cannot change
unnoticed. Only a commit that changes the random draws on purpose rewrites the reference.
"""

import numpy as np
import pytest

from .seeded_fits import FITS, REFERENCE, run_fit


@pytest.mark.parametrize("name", sorted(FITS))
def test_seeded_fit_is_bit_identical_to_reference(name):
    reference = np.load(REFERENCE)
    outputs = run_fit(name)
    stored = sorted(key for key in reference.files if key.startswith(f"{name}/"))
    assert sorted(outputs) == stored
    for key, value in outputs.items():
        expected = reference[key]
        assert value.dtype == expected.dtype, key
        np.testing.assert_array_equal(value, expected, err_msg=key, strict=True)
