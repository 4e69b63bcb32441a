"""Every validation case (external references: IVP Test Set HIRES/Robertson, closed forms, expm) as a test."""

from __future__ import annotations

import pytest

from validation.run import discover, evaluate

CASES, PROBLEMS = discover()


def test_cases_are_discovered_without_problems():
    assert not PROBLEMS and len(CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_validation_case_passes(case):
    outcome = evaluate(case)
    assert outcome.passed, outcome
