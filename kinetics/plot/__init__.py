"""Figures (matplotlib). matplotlib is imported only inside these functions."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from kinetics.solve import CompiledModel, Simulation

__all__ = ["plot_simulation"]


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
