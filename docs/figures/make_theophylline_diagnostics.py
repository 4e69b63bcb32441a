"""Regenerate the theophylline diagnostic figures shown in the README (docs/figures/theophylline_*.png).

FOCE-I fit of the one-compartment oral model to the public theophylline data (as in
tests/fit/test_population.py), then NPDE (1000 simulations) and a VPC (500 simulations).
Run from the repository root: ``python docs/figures/make_theophylline_diagnostics.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import kinetics  # noqa: E402
from kinetics.plot import plot_goodness_of_fit, plot_individual_fits, plot_npde, plot_parameter_table, plot_vpc  # noqa: E402
from tests.references import shared_data  # noqa: E402


def main() -> None:
    model = kinetics.load_model("oral_1cmt")
    data = kinetics.read_dataset(shared_data("theoph_nonmem.csv"))
    fit = kinetics.fit_population(model, data, estimate={"ka": np.exp(0.45), "CL": np.exp(1.0), "V": np.exp(3.45)},
                                  random_effects={"ka": 0.6, "CL": 0.3, "V": 0.1},
                                  error={"conc": {"kind": "additive", "add": 0.7}})
    figures = {
        "theophylline_individual_fits.png": plot_individual_fits(fit, model=model, data=data),
        "theophylline_goodness_of_fit.png": plot_goodness_of_fit(fit),
        "theophylline_npde.png": plot_npde(kinetics.npde(fit, model, data, n_sim=1000, seed=1)),
        "theophylline_vpc.png": plot_vpc(kinetics.vpc_data(fit, model, data, n_sim=500, seed=2)),
        "theophylline_parameters.png": plot_parameter_table(fit),
    }
    for name, fig in figures.items():
        fig.savefig(HERE / name, dpi=72)
        print(HERE / name)


if __name__ == "__main__":
    main()
