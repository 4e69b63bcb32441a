"""Analyses on simulated models: B-cell recovery time with a stated threshold rule."""

from kinetics.analysis._nca import AUC_METHODS, BLQRule, NCAResult, nca, nca_from_model, nca_table
from kinetics.analysis._recovery import BCellRecovery, b_cell_recovery_time
from kinetics.analysis._outcomes import (OUTCOMES, aplasia_duration, auc_0_28, autoantibody_reduction,
                                         autoantibody_reduction_d90, autoantibody_reduction_d180, b_cell_nadir, cmax,
                                         evaluate_outcome, evaluate_outcomes, fraction_of_baseline, igg_fraction_1y,
                                         outcome_output, outcome_unit, recovery_time)
from kinetics.analysis._local import ELASTICITY_METHODS, elasticities, omega_sds, outcome_elasticities, tornado
from kinetics.analysis._global import (DISTRIBUTION_KINDS, MorrisResult, ParameterDistribution, SobolResult,
                                       morris_screening, parameter_distributions, sobol_indices)

__all__ = ["BCellRecovery", "b_cell_recovery_time"]
__all__ += ["AUC_METHODS", "BLQRule", "NCAResult", "nca", "nca_from_model", "nca_table"]
__all__ += ["OUTCOMES", "aplasia_duration", "auc_0_28", "autoantibody_reduction", "autoantibody_reduction_d90",
            "autoantibody_reduction_d180", "b_cell_nadir", "cmax", "evaluate_outcome", "evaluate_outcomes",
            "fraction_of_baseline",
            "igg_fraction_1y", "outcome_output", "outcome_unit", "recovery_time"]
__all__ += ["ELASTICITY_METHODS", "elasticities", "omega_sds", "outcome_elasticities", "tornado"]
__all__ += ["DISTRIBUTION_KINDS", "MorrisResult", "ParameterDistribution", "SobolResult", "morris_screening",
            "parameter_distributions", "sobol_indices"]
from kinetics.analysis._dose import (DEFAULT_SWEEP_OUTCOMES, POWER_MODEL_COLUMNS, DoseSweep, PowerModel,  # noqa: E402
                                     default_sweep_outcomes, dose_sweep)

__all__ += ["DEFAULT_SWEEP_OUTCOMES", "POWER_MODEL_COLUMNS", "DoseSweep", "PowerModel", "default_sweep_outcomes",
            "dose_sweep"]
from kinetics.analysis._recovery_prediction import (RecoveryDistribution, observed_recovery_intervals,  # noqa: E402
                                                    predict_patient_recovery, recovery_distribution,
                                                    turnbull_survival)

__all__ += ["RecoveryDistribution", "observed_recovery_intervals", "predict_patient_recovery",
            "recovery_distribution", "turnbull_survival"]
from kinetics.analysis._population import PopulationSimulation, simulate_population  # noqa: E402

__all__ += ["PopulationSimulation", "simulate_population"]
