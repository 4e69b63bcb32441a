"""Read and validate a NONMEM-style event table.

Columns (case-insensitive): ``ID, TIME, DV`` (required), ``EVID`` (required when there are dose
rows), ``MDV, AMT, CMT, OUTPUT`` or ``DVID``, ``CENS, LIMIT, LLOQ, RATE, DUR``, ``UNIT`` (the unit of
DV, checked against the model output's unit); any other column is a covariate. ``.``, ``NA`` and empty cells are missing values. Every violation is collected and
reported with its source line and column; nothing is dropped, clipped or guessed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from kinetics.data._dataset import CENSORED_LEFT, CENSORED_RIGHT, UNCENSORED, Dataset, SubjectData
from kinetics.errors import DatasetError
from kinetics.solve import Dose

__all__ = ["read_dataset", "RESERVED_COLUMNS"]

NUMERIC_COLUMNS = ("TIME", "DV", "MDV", "EVID", "AMT", "CENS", "LIMIT", "LLOQ", "RATE", "DUR", "DVID")
RESERVED_COLUMNS = ("ID", "TIME", "DV", "MDV", "EVID", "AMT", "CMT", "OUTPUT", "CENS", "LIMIT", "LLOQ",
                    "RATE", "DUR", "DVID", "UNIT")
_MISSING = frozenset({"", ".", "NA"})
_MAX_PROBLEMS = 1000   # stop collecting after this many (the message shows the first 40)


def read_dataset(data: str | os.PathLike | pd.DataFrame, *, name: str | None = None) -> Dataset:
    """Read a patient event table from a CSV file or a DataFrame, validate it, return a :class:`Dataset`.

    Parameters
    ----------
    data
        Path to a CSV file, or a DataFrame with the same columns.
    name
        Label used in messages (defaults to the file name, or ``"DataFrame"``).

    Raises
    ------
    DatasetError
        Listing every violation with its line (header = line 1; for a DataFrame, row index + 2)
        and column: missing columns, non-numeric values, decreasing time within a subject,
        dose fields on observation rows, invalid EVID/MDV/CENS codes, censoring limits on the
        wrong side, DV below a stated LLOQ but not censored, duplicate rows, non-finite values.
    """
    raw, source = _load_raw(data, name)
    problems: list[str] = []
    table = _normalise(raw, source, problems)
    if "LINE" not in table.columns:   # column-level problems: rows cannot be checked
        raise DatasetError(source, problems)
    unparsed = {p.split(":")[0] for p in problems}
    row_problems: list[str] = []
    _check_rows(table, row_problems)
    problems += [p for p in row_problems if p.split(":")[0] not in unparsed]
    _check_duplicates(raw, table, problems)
    covariates = tuple(c for c in table.columns if c not in RESERVED_COLUMNS and c != "LINE")
    subjects = _subjects(table, covariates, problems) if not problems else ()
    if problems:
        raise DatasetError(source, problems)
    is_obs = table["EVID"] == 0
    n_excluded = int((is_obs & (table["MDV"] == 1)).sum())
    return Dataset(source=source, table=table, subjects=subjects, covariate_names=covariates, n_excluded=n_excluded)


def _load_raw(data, name: str | None) -> tuple[pd.DataFrame, str]:
    if isinstance(data, pd.DataFrame):
        # pandas' missing values (nan, None, NA) are missing cells, like '.' in a file
        text = data.reset_index(drop=True).astype(object).map(lambda v: "" if pd.isna(v) else str(v))
        return text, name or "DataFrame"
    path = Path(data)
    source = name or str(path)
    if not path.is_file():
        raise DatasetError(source, [f"file not found: {path}"])
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(source, [f"cannot be read as CSV: {exc}"]) from None
    return raw, source


def _normalise(raw: pd.DataFrame, source: str, problems: list[str]) -> pd.DataFrame:
    """Upper-case names, parse numeric columns, add LINE; collect column-level problems."""
    upper = [str(c).strip().upper() for c in raw.columns]
    seen: dict[str, str] = {}
    for orig, u in zip(raw.columns, upper):
        if u in seen:
            problems.append(f"columns '{seen[u]}' and '{orig}' are the same column (names are case-insensitive)")
        seen[u] = str(orig)
    if problems:
        return raw
    for col in ("ID", "TIME", "DV"):
        if col not in upper:
            problems.append(f"missing required column {col} (columns found: {', '.join(map(str, raw.columns))})")
    if "AMT" in upper and "EVID" not in upper:
        problems.append("column AMT is present but EVID is missing: EVID (0 observation, 1 dose) must say "
                        "which rows are doses")
    if "OUTPUT" in upper and "DVID" in upper:
        problems.append("both OUTPUT and DVID columns are present: use one to name the output a DV measures")
    if problems:
        return raw
    table = pd.DataFrame({u: raw[c].astype(str).str.strip() for c, u in zip(raw.columns, upper)})
    table["LINE"] = np.arange(len(table), dtype=int) + 2
    for col in NUMERIC_COLUMNS:
        if col in table.columns:
            table[col] = _parse_numeric(table[col], col, table["LINE"], problems)
    if "EVID" not in table.columns:
        table["EVID"] = 0.0
    if "MDV" not in table.columns:
        table["MDV"] = np.where(table["EVID"] == 0, 0.0, 1.0)
    for col in ("CMT", "OUTPUT", "ID", "UNIT"):
        if col in table.columns:
            table[col] = table[col].where(~table[col].isin(_MISSING), "")
    for col in ("AMT", "RATE", "DUR", "CENS"):
        if col not in table.columns:
            table[col] = 0.0
    for col in ("LIMIT", "LLOQ"):
        if col not in table.columns:
            table[col] = np.nan
    if "CMT" not in table.columns:
        table["CMT"] = ""
    return table


def _parse_numeric(col: pd.Series, name: str, lines: pd.Series, problems: list[str]) -> pd.Series:
    """Missing -> nan; anything else must be a float literal (nan/inf literals are kept, then rejected)."""
    out = np.full(len(col), np.nan)
    for i, (v, line) in enumerate(zip(col, lines)):
        v = str(v)
        if v in _MISSING:
            continue
        try:
            out[i] = float(v)
        except ValueError:
            if len(problems) < _MAX_PROBLEMS:
                problems.append(f"line {line}, column {name}: '{v[:40]}' is not a number")
            continue
        if not math.isfinite(out[i]):
            problems.append(f"line {line}, column {name}: value '{v[:40]}' is not finite")
    return pd.Series(out, index=col.index)


def _check_rows(t: pd.DataFrame, problems: list[str]) -> None:
    """Row-level rules; each violation names line and column."""
    def bad(mask: pd.Series, column: str, what: str) -> None:
        for line, val in zip(t.loc[mask, "LINE"], t.loc[mask, column]):
            if len(problems) < _MAX_PROBLEMS:
                problems.append(f"line {line}, column {column}: {what} (value {_show(val)})")

    bad(t["ID"] == "", "ID", "missing subject ID")
    bad(t["TIME"].isna(), "TIME", "missing time")
    bad(~t["EVID"].isin([0, 1, 2]), "EVID",
        "EVID must be 0 (observation), 1 (dose) or 2 (other event); resets (3, 4) are not supported")
    bad(~t["MDV"].isin([0, 1]), "MDV", "MDV must be 0 or 1")
    dose, obs = t["EVID"] == 1, t["EVID"] == 0
    used = obs & (t["MDV"] == 0)
    bad(dose & (t["MDV"] == 0), "MDV", "a dose row (EVID=1) must have MDV=1")
    bad(used & t["DV"].isna(), "DV", "observation row (EVID=0, MDV=0) without a DV")
    bad(dose & ~(t["AMT"] > 0), "AMT", "a dose row needs a positive AMT")
    bad(dose & (t["CMT"] == ""), "CMT", "a dose row needs CMT (the model's dose target)")
    bad(dose & ~(t["DV"].isna() | (t["DV"] == 0)), "DV", "a dose row has a DV (leave it '.' or 0)")
    for col in ("AMT", "RATE", "DUR"):
        bad(obs & ~(t[col].isna() | (t[col] == 0)), col, f"dose field {col} on an observation row (EVID=0)")
    bad(obs & (t["CMT"] != ""), "CMT", "dose field CMT on an observation row (EVID=0); name the measured output "
        "in OUTPUT")
    bad(dose & (t["RATE"] < 0), "RATE", "modelled rates/durations (RATE=-1/-2) are not supported; give RATE or DUR")
    bad(dose & (t["DUR"] < 0), "DUR", "a negative infusion duration")
    bad(dose & (t["RATE"].fillna(0) > 0) & (t["DUR"].fillna(0) > 0), "DUR", "give RATE or DUR, not both")
    _check_output_column(t, used, bad)
    _check_censoring(t, used, bad)
    bad(_time_decreases(t), "TIME", "time decreases within the subject")
    _check_contiguous_ids(t, problems)


def _check_output_column(t: pd.DataFrame, used: pd.Series, bad) -> None:
    if "OUTPUT" in t.columns:
        bad(used & (t["OUTPUT"] == ""), "OUTPUT", "observation row without OUTPUT (the model output DV measures)")
    elif "DVID" in t.columns:
        bad(used & ~((t["DVID"] >= 1) & (t["DVID"] % 1 == 0)), "DVID",
            "DVID must be a positive integer (1 = the model's first output)")


def _check_censoring(t: pd.DataFrame, used: pd.Series, bad) -> None:
    cens, dv, limit, lloq = t["CENS"].fillna(0), t["DV"], t["LIMIT"], t["LLOQ"]
    bad(~cens.isin([CENSORED_LEFT, UNCENSORED, CENSORED_RIGHT]), "CENS",
        "CENS must be 1 (below LLOQ; DV holds the LLOQ), -1 (above the upper limit) or 0")
    bad((t["EVID"] != 0) & (cens != 0), "CENS", "CENS set on a row that is not an observation")
    bad(used & (cens == 0) & limit.notna(), "LIMIT", "LIMIT given on an uncensored observation")
    bad(used & (cens == CENSORED_LEFT) & limit.notna() & ~(limit < dv), "LIMIT",
        "for CENS=1 LIMIT is the lower end of the interval and must be below DV (the LLOQ)")
    bad(used & (cens == CENSORED_RIGHT) & limit.notna() & ~(limit > dv), "LIMIT",
        "for CENS=-1 LIMIT is the upper end of the interval and must be above DV")
    bad(used & (cens == CENSORED_LEFT) & lloq.notna() & (lloq != dv), "LLOQ",
        "CENS=1 but DV differs from LLOQ: a censored row's DV must hold its LLOQ")
    bad(used & (cens == 0) & lloq.notna() & (dv < lloq), "DV",
        "DV is below LLOQ but CENS=0: flag it CENS=1 with DV = LLOQ (it will count as 'below LLOQ')")


def _time_decreases(t: pd.DataFrame) -> pd.Series:
    prev = t.groupby("ID", sort=False)["TIME"].shift(1)
    return (t["TIME"] < prev).fillna(False)


def _check_contiguous_ids(t: pd.DataFrame, problems: list[str]) -> None:
    starts = t["ID"] != t["ID"].shift(1)
    block_ids = t.loc[starts, ["ID", "LINE"]]
    for sid, lines in block_ids.groupby("ID", sort=False)["LINE"]:
        if len(lines) > 1:
            problems.append(f"line {int(lines.iloc[1])}, column ID: subject '{sid}' appears again after other subjects "
                            f"(first block starts at line {int(lines.iloc[0])}); keep each subject's rows together")


def _check_duplicates(raw: pd.DataFrame, t: pd.DataFrame, problems: list[str]) -> None:
    dup = raw.duplicated(keep="first").to_numpy()
    if dup.any():
        first = raw.duplicated(keep=False).to_numpy()
        key_to_line: dict[tuple, int] = {}
        for i, row in enumerate(raw.itertuples(index=False)):
            if first[i]:
                key_to_line.setdefault(tuple(row), int(t["LINE"].iloc[i]))
        for i in np.flatnonzero(dup)[:100]:
            problems.append(f"line {int(t['LINE'].iloc[i])}: duplicate of line {key_to_line[tuple(raw.iloc[i])]}")


def _show(v: object) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "missing"
    return repr(v) if isinstance(v, str) else f"{v:g}" if isinstance(v, float) else str(v)


def _subjects(t: pd.DataFrame, covariates: tuple[str, ...], problems: list[str]) -> tuple[SubjectData, ...]:
    out = []
    for sid, rows in t.groupby("ID", sort=False):
        cov, varying = _subject_covariates(rows, covariates, problems)
        dose_rows = rows[rows["EVID"] == 1]
        doses = tuple(Dose(time=float(r.TIME), amount=float(r.AMT), target=str(r.CMT), duration=_duration(r))
                      for r in dose_rows.itertuples(index=False))
        obs = rows[(rows["EVID"] == 0) & (rows["MDV"] == 0)]
        if "OUTPUT" in obs.columns:
            outputs = tuple(str(v) for v in obs["OUTPUT"])
        elif "DVID" in obs.columns:
            outputs = tuple(f"#{int(v)}" for v in obs["DVID"])
        else:
            outputs = tuple("" for _ in range(len(obs)))
        units = tuple(str(v) for v in obs["UNIT"]) if "UNIT" in obs.columns else ("",) * len(obs)
        cens = obs["CENS"].fillna(0).to_numpy(dtype=np.int8)
        limit = np.where(cens == CENSORED_LEFT, -np.inf, np.inf)
        limit = np.where(obs["LIMIT"].notna().to_numpy(), obs["LIMIT"].to_numpy(dtype=float), limit)
        out.append(SubjectData(id=str(sid), doses=doses, times=obs["TIME"].to_numpy(dtype=float),
                               outputs=outputs, dv=obs["DV"].to_numpy(dtype=float), cens=cens, limit=limit,
                               lines=obs["LINE"].to_numpy(dtype=int), dose_lines=dose_rows["LINE"].to_numpy(dtype=int),
                               units=units,
                               covariates=cov, time_varying=frozenset(varying)))
    return tuple(out)


def _duration(r) -> float:
    rate, dur = float(r.RATE) if r.RATE == r.RATE else 0.0, float(r.DUR) if r.DUR == r.DUR else 0.0
    return float(r.AMT) / rate if rate > 0 else dur


def _subject_covariates(rows: pd.DataFrame, names: tuple[str, ...], problems: list[str]):
    """First-row value per covariate (numeric where every value parses); missing later values carry forward."""
    values: dict[str, object] = {}
    varying = []
    for c in names:
        col = rows[c]
        present = col[~col.isin(_MISSING)]
        if present.empty or col.iloc[0] in _MISSING:
            problems.append(f"line {int(rows['LINE'].iloc[0])}, column {c}: covariate missing on the subject's "
                            "first row (values are carried forward, never backward)")
            continue
        numeric = pd.to_numeric(present, errors="coerce")
        v = numeric if numeric.notna().all() else present
        if isinstance(v.iloc[0], float) and not math.isfinite(v.iloc[0]):
            problems.append(f"line {int(rows['LINE'].iloc[0])}, column {c}: covariate value is not finite")
        values[c] = v.iloc[0].item() if hasattr(v.iloc[0], "item") else v.iloc[0]
        if v.nunique() > 1:
            varying.append(c)
    return values, varying
