"""Code generation: symbolic Model -> numba kernel source, cached on disk."""

from kinetics.codegen._cache import cache_dir, cache_key, load_module
from kinetics.codegen._generate import generate_model_source, model_fingerprint

__all__ = ["cache_dir", "cache_key", "generate_model_source", "load_module", "model_fingerprint"]
