"""Patient datasets: the validated event table and its per-subject view."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from kinetics.errors import DatasetError, did_you_mean
from kinetics.solve import Dose

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["Dataset", "SubjectData", "CENSORED_LEFT", "CENSORED_RIGHT", "UNCENSORED"]

UNCENSORED, CENSORED_LEFT, CENSORED_RIGHT = 0, 1, -1


@dataclass(frozen=True)
class SubjectData:
    """One subject's doses and observations, in time order.

    ``times``, ``outputs``, ``dv``, ``cens``, ``limit`` and ``lines`` are aligned, one entry per
    observation used in a fit (EVID 0, MDV 0). ``cens``: 0 observed, 1 left-censored (``dv`` holds
    the LLOQ), -1 right-censored (``dv`` holds the upper limit). ``limit`` is the other end of a
    censoring interval (LIMIT column; -inf / +inf when absent). ``lines`` are source line numbers.
    """

    id: str
    doses: tuple[Dose, ...]
    times: np.ndarray
    outputs: tuple[str, ...]
    dv: np.ndarray
    cens: np.ndarray
    limit: np.ndarray
    lines: np.ndarray
    dose_lines: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    units: tuple[str, ...] = ()                                      # UNIT column per observation ("" if absent)
    covariates: Mapping[str, object] = field(default_factory=dict)   # value on the subject's first row
    time_varying: frozenset[str] = frozenset()                       # covariates that change within the subject

    @property
    def n_observations(self) -> int:
        return int(self.times.size)


@dataclass(frozen=True)
class Dataset:
    """A validated event table (NONMEM layout, see ``read_dataset``).

    ``table`` keeps every source row with upper-case column names and a ``LINE`` column (source
    line, header = 1); ``subjects`` is the per-subject view used by the estimators.
    """

    source: str
    table: pd.DataFrame
    subjects: tuple[SubjectData, ...]
    covariate_names: tuple[str, ...]
    n_excluded: int   # observation rows with MDV=1 (kept in ``table``, not used in fits)

    @property
    def n_subjects(self) -> int:
        return len(self.subjects)

    @property
    def n_observations(self) -> int:
        return sum(s.n_observations for s in self.subjects)

    def output_names(self) -> tuple[str, ...]:
        """Output names measured in the data, in first-seen order."""
        seen: dict[str, None] = {}
        for s in self.subjects:
            seen.update(dict.fromkeys(s.outputs))
        return tuple(seen)

    def observation_counts(self) -> dict[str, tuple[int, int]]:
        """Per output: (number of observations, number censored)."""
        counts: dict[str, list[int]] = {}
        for s in self.subjects:
            for name, c in zip(s.outputs, s.cens):
                n = counts.setdefault(name, [0, 0])
                n[0] += 1
                n[1] += int(c != UNCENSORED)
        return {k: (v[0], v[1]) for k, v in counts.items()}

    def summary(self) -> str:
        lines = [f"Dataset {self.source}: {self.n_subjects} subjects, {self.n_observations} observations"
                 + (f" ({self.n_excluded} rows with MDV=1 not used)" if self.n_excluded else "")]
        for name, (n, c) in self.observation_counts().items():
            lines.append(f"  {name}: {n} observations, {c} censored ({100.0 * c / max(n, 1):.1f} %)")
        n_doses = sum(len(s.doses) for s in self.subjects)
        lines.append(f"  doses: {n_doses}; covariates: {', '.join(self.covariate_names) or 'none'}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Dataset {self.source}: {self.n_subjects} subjects, {self.n_observations} observations>"

    def for_model(self, model, log_outputs: Iterable[str] = ()) -> Dataset:
        """The dataset checked against ``model``, with DVID numbers / a missing OUTPUT resolved to output names.

        Checks that every dose target (CMT) is a dose target of the model, every OUTPUT names a
        model output (DVID k = the k-th output; with neither column the model must have one output),
        that a UNIT column agrees with the output's declared unit, and that outputs fitted on the log
        scale have positive DV (or censoring limit).

        Raises
        ------
        DatasetError
            Listing every violation with its line and column.
        """
        problems: list[str] = []
        targets, outputs = tuple(model.dose_target_names), tuple(model.output_names)
        log_set = set(log_outputs)
        resolved = []
        for s in self.subjects:
            for d, line in zip(s.doses, s.dose_lines):
                if d.target not in targets:
                    problems.append(f"line {line}, column CMT: dose target '{d.target}' is not a dose target of model "
                                    f"'{model.name}' (targets: {', '.join(targets) or 'none'})"
                                    f"{did_you_mean(d.target, targets)}")
            names = []
            units = s.units or ("",) * len(s.outputs)
            for name, dv, c, line, unit in zip(s.outputs, s.dv, s.cens, s.lines, units):
                name = _resolve_output(name, outputs, model.name, int(line), problems)
                names.append(name)
                if unit and name in outputs:
                    expected = model.model.outputs[outputs.index(name)].unit
                    if expected and _unit_key(unit) != _unit_key(expected):
                        problems.append(f"line {line}, column UNIT: DV is in '{unit}' but output '{name}' of model "
                                        f"'{model.name}' is in '{expected}': convert the data or the model")
                if name in log_set and not dv > 0:
                    what = "censoring limit" if c != UNCENSORED else "DV"
                    problems.append(f"line {line}, column DV: {what} {dv:g} is not positive but output '{name}' "
                                    "is fitted on the log scale")
            resolved.append(replace(s, outputs=tuple(names)))
        if problems:
            raise DatasetError(self.source, problems)
        return replace(self, subjects=tuple(resolved))


def _unit_key(unit: str) -> str:
    """Units compare without spaces or case, with the micro sign written u (copies/µg == copies/ug)."""
    return unit.replace("µ", "u").replace("μ", "u").replace(" ", "").lower()


def _resolve_output(name: str, outputs: tuple[str, ...], model_name: str, line: int, problems: list[str]) -> str:
    if name == "":
        if len(outputs) == 1:
            return outputs[0]
        problems.append(f"line {line}: no OUTPUT/DVID column but model '{model_name}' has {len(outputs)} outputs "
                        f"({', '.join(outputs)}): say which one each DV measures")
        return name
    if name.startswith("#"):
        k = int(name[1:])
        if k > len(outputs):
            problems.append(f"line {line}, column DVID: {k} but model '{model_name}' has {len(outputs)} outputs")
            return name
        return outputs[k - 1]
    if name not in outputs:
        problems.append(f"line {line}, column OUTPUT: '{name}' is not an output of model '{model_name}' "
                        f"(outputs: {', '.join(outputs)}){did_you_mean(name, outputs)}")
    return name
