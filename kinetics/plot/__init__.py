"""Figures (matplotlib). matplotlib is imported only inside these functions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from kinetics.solve import CompiledModel, Simulation

__all__ = ["plot_percentile_band", "plot_simulation"]

from kinetics.plot._diagnostics import (lowess, plot_eta_covariates, plot_eta_distributions,  # noqa: E402
                                        plot_goodness_of_fit, plot_individual_fits, plot_npde,
                                        plot_parameter_table, plot_vpc)

__all__ += ["lowess", "plot_eta_covariates", "plot_eta_distributions", "plot_goodness_of_fit",
            "plot_individual_fits", "plot_npde", "plot_parameter_table", "plot_vpc"]
from kinetics.plot._analysis import (plot_dose_sweep, plot_exposure_table, plot_recovery_comparison,  # noqa: E402
                                    plot_recovery_distribution, plot_sobol, plot_tornado)

__all__ += ["plot_dose_sweep", "plot_exposure_table", "plot_recovery_comparison", "plot_recovery_distribution",
            "plot_sobol", "plot_tornado"]


def plot_simulation(sim: Simulation, model: CompiledModel, log: bool = False) -> Figure:
    """One panel per model output against time, labelled with names and units.

    Parameters
    ----------
    sim
        A :class:`~kinetics.solve.Simulation` of ``model``.
    log
        Log-scale y axes (non-positive values are not drawn).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outputs = model.model.outputs or ()
    panels = [(o.name, o.unit, sim.outputs[o.name]) for o in outputs]
    if not panels:
        panels = [(s.name, s.unit, sim.states[:, i]) for i, s in enumerate(model.model.states)]
    ncol = min(3, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False)
    unit_t = model.model.time_unit or "time"
    for ax, (name, unit, values) in zip(axes.flat, panels):
        ax.plot(sim.times, values, lw=1.8)
        ax.set_xlabel(f"time ({unit_t})")
        ax.set_ylabel(f"{name} ({unit})" if unit else name)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{model.name}: {sim.message}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_percentile_band(times: np.ndarray, values: np.ndarray, *, label: str, unit: str = "",
                         time_unit: str = "day", log: bool = True, percentiles: tuple[float, float] = (5.0, 95.0),
                         title: str = "") -> Figure:
    """Median and a percentile band over sets: ``values`` is ``(n_sets, n_times)``; nan sets are left out.

    The figure states how many sets went in and how many failed (nan) and were left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = np.all(np.isfinite(values), axis=1)
    v = values[ok]
    lo, med, hi = np.percentile(v, [percentiles[0], 50.0, percentiles[1]], axis=0)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.fill_between(times, lo, hi, alpha=0.3, label=f"{percentiles[0]:g}-{percentiles[1]:g}th percentile")
    ax.plot(times, med, lw=2, label="median")
    ax.set_xlabel(f"time ({time_unit})")
    ax.set_ylabel(f"{label} ({unit})" if unit else label)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(title=f"n = {int(ok.sum())} ({int((~ok).sum())} failed solves left out)", loc="upper right")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
