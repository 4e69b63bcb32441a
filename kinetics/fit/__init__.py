"""Estimation: error models and the M3 censored likelihood, population NLME fits (FOCE-I, FOCE, FO,
Laplace), the objective at given values, and the covariance step."""

from kinetics.fit._covariance import COVARIANCE_KINDS, CovarianceResult
from kinetics.fit._likelihood import ERROR_MODELS, ErrorModel, observation_terms
from kinetics.fit._population import evaluate_objective, fit_population
from kinetics.fit._results import PopulationFit

__all__ = ["COVARIANCE_KINDS", "CovarianceResult", "ERROR_MODELS", "ErrorModel", "PopulationFit",
           "evaluate_objective", "fit_population", "observation_terms"]
