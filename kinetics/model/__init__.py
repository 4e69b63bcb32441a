"""Symbolic models: parse and validate model files into :class:`Model` (sympy)."""

from kinetics.model._expr import FUNCTIONS, parse_expression
from kinetics.model._file import parse_model_text, read_model_file
from kinetics.model._library import find_model_file, library_dirs, library_names
from kinetics.model._model import TIME, DoseTarget, Model, Output, Parameter, State, build_model

__all__ = [
    "FUNCTIONS", "TIME", "DoseTarget", "Model", "Output", "Parameter", "State", "build_model",
    "find_model_file", "library_dirs", "library_names", "parse_expression", "parse_model_text",
    "read_model_file",
]
