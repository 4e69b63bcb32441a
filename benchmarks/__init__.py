"""Speed benchmarks: kinetics against peer ODE solvers on the shared ``cart_bench`` model.

``python -m benchmarks.run --out benchmarks/RESULTS.md`` runs everything side by side;
``python benchmarks/peers.py`` self-checks the peers alone.
"""
