"""Patient datasets: the NONMEM-style event table, its validation, censoring flags and covariates."""

from kinetics.data._dataset import CENSORED_LEFT, CENSORED_RIGHT, UNCENSORED, Dataset, SubjectData
from kinetics.data._read import RESERVED_COLUMNS, read_dataset

__all__ = ["CENSORED_LEFT", "CENSORED_RIGHT", "UNCENSORED", "Dataset", "RESERVED_COLUMNS", "SubjectData",
           "read_dataset"]
