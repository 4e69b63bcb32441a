"""Shared checks for library models: every model compiles, simulates from its defaults,
keeps states non-negative and has sensitivities that match central differences."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import kinetics


def check_simulates_from_defaults(model, times: np.ndarray, doses: Sequence[kinetics.Dose] | None = None,
                                  *, negative_tolerance: float = 1e-9):
    """Defaults solve with success status and no state goes below -tolerance (relative to its max)."""
    sim = model.simulate(times, doses=doses, rtol=1e-8, atol=1e-10)
    assert sim.success, sim.message
    scale = np.maximum(np.abs(sim.states).max(axis=0), 1e-300)
    worst = (sim.states / scale).min()
    assert worst >= -negative_tolerance, f"a state went negative (min {worst:.3g} of its max)"
    return sim


def check_sensitivities_match_central_differences(model, times: np.ndarray, wrt: Sequence[str],
                                                  doses: Sequence[kinetics.Dose] | None = None,
                                                  *, h_rel: float = 1e-5, rtol: float = 1e-4, atol_rel: float = 1e-7):
    """Forward sensitivities d outputs / d p agree with central differences (solves at rtol 1e-12)."""
    sens = model.sensitivities(times, doses=doses, wrt=list(wrt), rtol=1e-10, atol=1e-12)
    assert sens.success
    base = dict(model.defaults)
    for j, name in enumerate(wrt):
        h = h_rel * abs(base[name]) if base[name] != 0 else h_rel
        up = model.simulate(times, params={**base, name: base[name] + h}, doses=doses, rtol=1e-12, atol=1e-14)
        dn = model.simulate(times, params={**base, name: base[name] - h}, doses=doses, rtol=1e-12, atol=1e-14)
        for o, out in enumerate(model.output_names):
            fd = (up.outputs[out] - dn.outputs[out]) / (2 * h)
            scale = np.abs(sens.simulation.outputs[out]).max() / max(abs(base[name]), 1e-12)
            np.testing.assert_allclose(sens.outputs[:, o, j], fd, rtol=rtol, atol=atol_rel * scale + 1e-300,
                                       err_msg=f"d {out} / d {name}")
    return sens
