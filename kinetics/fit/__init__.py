"""Estimation: error models and the M3 censored likelihood, population NLME fits (FOCE-I, FOCE, FO,
Laplace), the objective at given values, and the covariance step."""

from kinetics.fit._covariance import COVARIANCE_KINDS, CovarianceResult
from kinetics.fit._individual import IndividualFit, IndividualFits, ProfileInterval, fit_individual
from kinetics.fit._likelihood import ERROR_MODELS, ErrorModel, observation_terms
from kinetics.fit._npde import NPDEResult, NPDETests, SimulationSpec, build_simulation_spec, npde, npde_tests
from kinetics.fit._population import evaluate_objective, fit_population
from kinetics.fit._results import PopulationFit
from kinetics.fit._spec import FitSpec, read_fit_spec, run_fit_spec
from kinetics.fit._vpc import VPCData, vpc_data

__all__ = ["COVARIANCE_KINDS", "CovarianceResult", "ERROR_MODELS", "ErrorModel", "PopulationFit",
           "evaluate_objective", "fit_population", "observation_terms"]
__all__ += ["FitSpec", "IndividualFit", "IndividualFits", "ProfileInterval", "fit_individual", "read_fit_spec",
            "run_fit_spec"]
__all__ += ["NPDEResult", "NPDETests", "SimulationSpec", "VPCData", "build_simulation_spec", "npde", "npde_tests",
            "vpc_data"]
