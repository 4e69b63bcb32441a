"""The kernels allocate nothing: callers hand them work arrays of ``work_lengths`` (kinetics.solve._solver_kernels)."""

from __future__ import annotations

import numpy as np
import pytest

import kinetics


def test_a_kernel_given_too_little_work_space_raises_instead_of_writing_past_it():
    m = kinetics.load_model("oral_1cmt")
    args = list(m._kernel_arguments(np.array([1.0, 2.0]), m.parameter_vector(None),
                                    [kinetics.Dose(0.0, 100.0, "depot")], None, 1e-6, 1e-9, "auto", 1000, 0.0,
                                    None, None))
    work_at = len(args) - 7     # (..., work, iwork, Yout, O, dO, ist, fst)
    nf, _ = m.kernels.work_lengths(len(m.state_names), 1)
    assert args[work_at].shape == (nf,)
    m.kernels.simulate_kernel(*args)
    assert args[-2][5] == 0
    args[work_at] = np.empty(nf - 1)
    with pytest.raises(ValueError, match="work arrays shorter"):
        m.kernels.simulate_kernel(*args)


def test_batch_sets_sharing_a_work_row_equal_single_solves():
    # 8 * threads work rows at most: with 50 sets, consecutive sets reuse a row, which must not carry anything
    # from one solve to the next (sets differ in parameters and doses, some are infusions)
    m = kinetics.load_model("oral_1cmt")
    rng = np.random.default_rng(3)
    P = m.parameter_vector(None) * np.exp(0.3 * rng.standard_normal((50, len(m.parameter_names))))
    doses = [[kinetics.Dose(0.0, 100.0 + i, "depot", duration=(0.5 if i % 3 == 0 else 0.0))] for i in range(50)]
    t = np.linspace(0.25, 24.0, 12)
    batch = m.simulate_batch(t, params=P, doses=doses, rtol=1e-8, atol=1e-10)
    for i in (0, 1, 17, 49):
        one = m.simulate(t, params=P[i], doses=doses[i], rtol=1e-8, atol=1e-10)
        np.testing.assert_array_equal(batch.outputs[i, :, 0], one.outputs["conc"])


def test_the_step_size_controllers_fifth_root_matches_pow_over_every_binade():
    # inv_fifth_root replaces x ** -0.2 (pow) in the controllers; reference: numpy's power, over 1e-300..1e300
    # (every exponent residue mod 5) and densely where the controllers use it (1e-5..1e4)
    from numba import njit

    inv_fifth_root = kinetics.load_model("oral_1cmt").kernels.inv_fifth_root

    @njit
    def many(x):
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            out[i] = inv_fifth_root(x[i])
        return out

    x = np.concatenate([np.logspace(-300, 300, 6001), np.logspace(-5, 4, 20001), [1.0, 0.5, 2.0, 32.0, 1 / 32]])
    rel = np.abs(many(x) / np.power(x, -0.2) - 1.0)
    assert rel.max() < 4e-5
