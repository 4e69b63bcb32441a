"""kinetics: CAR-T cellular kinetics, B-cell depletion and recovery models with numba ODE solvers.

Quick start
-----------
>>> import kinetics
>>> model = kinetics.load_model("oral_1cmt")
>>> sim = model.simulate([0.5, 1, 2], doses=[kinetics.Dose(time=0.0, amount=320.0, target="depot")])
>>> sim.outputs["conc"].shape
(3,)
"""

from kinetics.analysis import BCellRecovery, b_cell_recovery_time
from kinetics.analysis import NCAResult, nca, nca_table
from kinetics.analysis import (OUTCOMES, MorrisResult, SobolResult, elasticities, morris_screening,
                               outcome_elasticities, sobol_indices, tornado)
from kinetics.data import Dataset, read_dataset
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
from kinetics.fit import PopulationFit, evaluate_objective, fit_population
from kinetics.fit import IndividualFits, fit_individual, read_fit_spec, run_fit_spec
from kinetics.fit import NPDEResult, VPCData, npde, npde_tests, vpc_data
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
