"""Analyses on simulated models: B-cell recovery time with a stated threshold rule."""

from kinetics.analysis._nca import AUC_METHODS, BLQRule, NCAResult, nca, nca_from_model, nca_table
from kinetics.analysis._recovery import BCellRecovery, b_cell_recovery_time

__all__ = ["BCellRecovery", "b_cell_recovery_time"]
__all__ += ["AUC_METHODS", "BLQRule", "NCAResult", "nca", "nca_from_model", "nca_table"]
