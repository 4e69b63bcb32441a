"""kinetics: CAR-T cellular kinetics, B-cell depletion and recovery models with numba ODE solvers.

Quick start
-----------
>>> import kinetics
>>> model = kinetics.load_model("oral_1cmt")
>>> sim = model.simulate([0.5, 1, 2], doses=[kinetics.Dose(time=0.0, amount=320.0, target="depot")])
>>> sim.outputs["conc"].shape
(3,)
"""

from kinetics.errors import (
    DatasetError,
    DoseError,
    ExpressionError,
    FitSpecError,
    KineticsError,
    ModelError,
    ModelFileError,
    SolverInputError,
)
from kinetics.model import Model, Parameter, build_model, library_names, read_model_file
from kinetics.solve import (
    METHODS,
    BatchCrossing,
    BatchSimulation,
    CompiledModel,
    Crossing,
    Dose,
    Sensitivities,
    Simulation,
    SolveStatus,
    compile_model,
    load_model,
)

__version__ = "0.1.0"

# The analysis, data and fitting layers (pandas, scipy.stats, lmfit: ~0.7 s of imports) load on first use,
# so that a process that only simulates starts fast (issue 2: cached model, first solve in < 1 s).
_LAZY = {
    "kinetics.analysis": ("BCellRecovery", "b_cell_recovery_time", "NCAResult", "nca", "nca_table", "OUTCOMES",
                          "MorrisResult", "SobolResult", "elasticities", "morris_screening", "outcome_elasticities",
                          "sobol_indices", "tornado"),
    "kinetics.data": ("Dataset", "read_dataset"),
    "kinetics.fit": ("PopulationFit", "evaluate_objective", "fit_population", "IndividualFits", "fit_individual",
                     "read_fit_spec", "run_fit_spec", "NPDEResult", "VPCData", "npde", "npde_tests", "vpc_data"),
}
_LAZY_NAMES = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> object:
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'kinetics' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))

__all__ = [
    "BCellRecovery", "Dataset", "DatasetError", "FitSpecError", "PopulationFit", "b_cell_recovery_time",
    "evaluate_objective", "fit_population", "read_dataset",
    "METHODS", "BatchCrossing", "BatchSimulation", "CompiledModel", "Crossing", "Dose", "DoseError", "ExpressionError",
    "KineticsError", "Model", "ModelError", "ModelFileError", "Parameter", "Sensitivities", "Simulation",
    "SolveStatus", "SolverInputError", "build_model", "compile_model", "library_names", "load_model",
    "read_model_file", "__version__",
]
__all__ += ["NCAResult", "nca", "nca_table"]
__all__ += ["IndividualFits", "fit_individual", "read_fit_spec", "run_fit_spec"]
__all__ += ["OUTCOMES", "MorrisResult", "SobolResult", "elasticities", "morris_screening", "outcome_elasticities",
            "sobol_indices", "tornado"]
__all__ += ["NPDEResult", "VPCData", "npde", "npde_tests", "vpc_data"]
