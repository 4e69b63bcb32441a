"""Validation cases for ``kinetics``: solver results checked against references from outside the project.

Run ``python -m validation.run`` (or ``make validate``) from the repository root;
it writes ``validation/REPORT.md``. Each module in ``validation/cases/`` exposes
``CASES``, a list of :class:`validation.framework.Case`.
"""
