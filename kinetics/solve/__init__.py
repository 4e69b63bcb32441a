"""Numba ODE solvers: compiled models, doses, single solves, batches, sensitivities, event location."""

from kinetics.solve._compiled import CompiledModel, compile_model, load_model
from kinetics.solve._types import (
    METHODS,
    BatchCrossing,
    BatchSimulation,
    Crossing,
    Dose,
    Sensitivities,
    Simulation,
    SolveStatus,
)

__all__ = [
    "METHODS", "BatchCrossing", "BatchSimulation", "CompiledModel", "Crossing", "Dose", "Sensitivities", "Simulation",
    "SolveStatus", "compile_model", "load_model",
]
