"""Seeded, reproducible virtual trial of CD19 + BCMA CAR-T co-infusion in refractory SLE.

Writes ``virtual_trial.csv`` (event table), ``virtual_trial_truth.csv`` (true individual
parameters) and ``virtual_trial.json`` (everything needed to re-create the data and to check
fits against it) to ``fits/data/``; see ``fits/data/README.md``.

Design (resembling the co-infusion study of ../shared/DESIGN.md; Feng 2025 dose levels were not
retrievable, so the levels are an assumption): 15 patients, 5 per dose level, CD19 and BCMA
CAR+ cells escalating together at 1e6, 2e6 and 3e6 CAR+ cells/kg of each product (the model's
dose unit is CAR+ cells, so AMT = level x body weight), both infused at day 0 after the
lymphodepletion of the model's default scenario (Flu/Cy ending on day -3, parameters ``t_LD``,
``f_LD``). Individual parameters are log-normal around the model defaults with the SDs of the
model's ``[metadata] iiv``; observations carry residual error and are censored at a per-assay
LLOQ (CENS=1, DV = LLOQ).

Run ``python fits/make_virtual_trial.py [--seed N] [--out DIR]``; the same seed gives
byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import kinetics
from kinetics import codegen

__all__ = ["DEFAULT_SEED", "VirtualTrial", "VirtualTrialError", "main", "design_subjects", "draw_parameters",
           "simulate_medians", "observe", "event_table", "trial_spec"]

DEFAULT_SEED = 20250419
DEFAULT_OUT = Path(__file__).resolve().parent / "data"
MODEL = "dual_car_sle"

#: CAR+ cells per kg of each product, per dose level (assumption: Feng 2025 levels not retrievable;
#: 1e6/kg is the model's default scenario and the Erlangen CD19 CAR-T dose, Mackensen 2022).
DOSE_LEVELS_PER_KG = (1.0e6, 2.0e6, 3.0e6)
SUBJECTS_PER_LEVEL = 5
#: body weight, kg: log-normal, median 60 kg, SD of log 0.15, rounded to 0.1 kg (assumption: adult
#: SLE patients, mostly women)
WT_MEDIAN_KG, WT_SD_LOG = 60.0, 0.15

CART_DAYS = (0, 1, 4, 7, 10, 14, 21, 28, 42, 56, 84, 112, 168)
LAB_DAYS = (0, 7, 14, 28, 56, 84, 112, 168, 252, 365, 540, 730)
CART_OUTPUTS = ("car19_qpcr", "car19_flow", "carbcma_qpcr", "carbcma_flow")
LAB_OUTPUTS = ("bcells", "igg", "anti_dsdna")
LOG_OUTPUTS = ("car19_qpcr", "car19_flow", "carbcma_qpcr", "carbcma_flow", "bcells")

#: Residual error per output in the form ``kinetics.fit_population(error=...)`` accepts.
#: SDs are assumptions (not published for these assays): qPCR inter-assay CV ~50 %, flow ~35 %,
#: B-cell counts ~30 % (log scale); nephelometric IgG 8 % CV; anti-dsDNA ELISA 15 % CV plus 2 IU/mL.
ERROR: dict[str, dict[str, float | str]] = {
    "car19_qpcr": {"kind": "log_additive", "add": 0.5},
    "car19_flow": {"kind": "log_additive", "add": 0.35},
    "carbcma_qpcr": {"kind": "log_additive", "add": 0.5},
    "carbcma_flow": {"kind": "log_additive", "add": 0.35},
    "bcells": {"kind": "log_additive", "add": 0.3},
    "igg": {"kind": "proportional", "prop": 0.08},
    "anti_dsdna": {"kind": "combined", "add": 2.0, "prop": 0.15},
}

#: Lower limit of quantification per output (model unit) and where the number comes from.
LLOQ: dict[str, float] = {"car19_qpcr": 20.0, "car19_flow": 0.1, "carbcma_qpcr": 20.0, "carbcma_flow": 0.1,
                          "bcells": 1.0, "igg": 0.5, "anti_dsdna": 10.0}
_QPCR_SRC = ("assumption within the range of reference/models.md section 3 (product qPCR LLOQs not retrieved [N]; "
             "'usually tens-hundreds of copies/ug' [R])")
_FLOW_SRC = ("assumption anchored to reference/models.md section 3 (Peinelt 2022 validated flow assay: LLOQ 22 CAR-T "
             "events [V]); 22 events in ~200 uL of acquired blood ~ 0.1 cells/uL (the acquired volume is assumed)")
LLOQ_SOURCE: dict[str, str] = {
    "car19_qpcr": _QPCR_SRC, "carbcma_qpcr": _QPCR_SRC, "car19_flow": _FLOW_SRC, "carbcma_flow": _FLOW_SRC,
    "bcells": "assumption (the 1 cell/uL reappearance threshold of Mackensen 2022 and of the model's recovery_rule)",
    "igg": "assumption (typical lower reporting limit of nephelometric IgG assays)",
    "anti_dsdna": "assumption (typical lower limit of anti-dsDNA ELISAs; not in reference/models.md)",
}

#: Individual parameters are rounded to this many significant digits *before* simulating, and DVs
#: to ASSAY_DIGITS, so the files do not depend on last-bit differences between machines (SIMD exp,
#: FMA in the solver) and the truth file holds exactly the values that were simulated.
PARAM_DIGITS, ASSAY_DIGITS = 6, 4
RTOL, ATOL = 1e-10, 1e-12

COLUMNS = ("ID", "TIME", "DV", "MDV", "EVID", "AMT", "CMT", "OUTPUT", "CENS", "LLOQ",
           "WT", "DOSE_LEVEL", "DOSEKG", "DOSE19", "DOSEBCMA")
COVARIATES = ("WT", "DOSE_LEVEL", "DOSEKG", "DOSE19", "DOSEBCMA")


class VirtualTrialError(RuntimeError):
    """The virtual trial cannot be generated (a failed solve, a draw outside a parameter's bounds)."""


@dataclass(frozen=True)
class VirtualTrial:
    """What :func:`main` generated.

    ``data``: the event table as written; ``truth``: one row per subject (design, covariates,
    true individual parameters); ``medians``: the noise-free model predictions (``ID, TIME,
    OUTPUT, IPRED``, one row per observation, in the order of the observation rows of ``data``);
    ``spec``: the JSON record; ``paths``: the files written.
    """

    data: pd.DataFrame
    truth: pd.DataFrame
    medians: pd.DataFrame
    spec: dict
    paths: tuple[Path, ...]


def round_significant(x: np.ndarray | float, digits: int) -> np.ndarray:
    """Round to ``digits`` significant digits through decimal text (the same result on every machine)."""
    a = np.asarray(x, dtype=float)
    return np.vectorize(lambda v: float(f"{v:.{digits}g}"), otypes=[float])(a) if a.size else a.copy()


def design_subjects(rng: np.random.Generator) -> pd.DataFrame:
    """Subjects, dose levels, body weights and doses (CAR+ cells of each product).

    Returns a frame with ``ID`` (1..15), ``DOSE_LEVEL`` (1..3), ``WT`` (kg), ``DOSEKG`` (CAR+
    cells/kg of each product), ``DOSE19`` and ``DOSEBCMA`` (CAR+ cells infused). Uses
    ``rng.standard_normal`` once, for the weights.
    """
    n = SUBJECTS_PER_LEVEL * len(DOSE_LEVELS_PER_KG)
    level = np.repeat(np.arange(1, len(DOSE_LEVELS_PER_KG) + 1), SUBJECTS_PER_LEVEL)
    wt = np.array([float(f"{w:.1f}") for w in WT_MEDIAN_KG * np.exp(WT_SD_LOG * rng.standard_normal(n))])
    per_kg = np.array(DOSE_LEVELS_PER_KG)[level - 1]
    dose = np.round(per_kg * wt)   # whole cells; exact, as wt has one decimal
    return pd.DataFrame({"ID": np.arange(1, n + 1), "DOSE_LEVEL": level, "WT": wt, "DOSEKG": per_kg,
                         "DOSE19": dose, "DOSEBCMA": dose.copy()})


def random_effect_sds(model) -> dict[str, float]:
    """The model's suggested between-subject SDs (``[metadata] iiv``: SD of log-normal etas)."""
    iiv = model.model.metadata.get("iiv")
    if not isinstance(iiv, Mapping) or not iiv:
        raise VirtualTrialError(f"model '{model.name}' has no [metadata] iiv table of between-subject SDs")
    unknown = [k for k in iiv if k not in model.parameter_names]
    if unknown:
        raise VirtualTrialError(f"model '{model.name}' [metadata] iiv names unknown parameters {unknown}")
    out = {}
    for k, v in iiv.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 0):
            raise VirtualTrialError(f"model '{model.name}' [metadata] iiv: {k} = {v!r} is not a finite SD >= 0")
        out[str(k)] = float(v)
    return out


def draw_parameters(model, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """True individual parameters: ``typical * exp(eta)``, ``eta ~ N(0, sd^2)`` per parameter of the iiv table.

    Draws an ``(n, n_params)`` standard-normal block (subjects in rows, parameters in iiv order),
    rounds to ``PARAM_DIGITS`` significant digits and checks the model's bounds.

    Raises
    ------
    VirtualTrialError
        If a draw falls outside the parameter's bounds (never clipped silently).
    """
    sds = random_effect_sds(model)
    z = rng.standard_normal((n, len(sds)))
    out = {}
    by_name = {p.name: p for p in model.model.parameters}
    for j, (name, sd) in enumerate(sds.items()):
        values = round_significant(model.defaults[name] * np.exp(sd * z[:, j]), PARAM_DIGITS)
        p = by_name[name]
        bad = np.flatnonzero((values < p.lower) | (values > p.upper))
        if bad.size:
            raise VirtualTrialError(f"subject {bad[0] + 1}: drawn {name} = {values[bad[0]]!r} is outside the bounds "
                                    f"[{p.lower}, {p.upper}] of model '{model.name}'; use another seed")
        out[name] = values
    return pd.DataFrame(out)


def observation_schedule() -> pd.DataFrame:
    """One subject's observations: ``TIME, OUTPUT`` sorted by time, then output order (CAR-T outputs first)."""
    order = {o: k for k, o in enumerate(CART_OUTPUTS + LAB_OUTPUTS)}
    rows = [(t, o) for t in CART_DAYS for o in CART_OUTPUTS] + [(t, o) for t in LAB_DAYS for o in LAB_OUTPUTS]
    rows.sort(key=lambda r: (r[0], order[r[1]]))
    return pd.DataFrame(rows, columns=["TIME", "OUTPUT"])


def subject_doses(row) -> list[kinetics.Dose]:
    """Both products as boluses at day 0 (targets ``car19`` and ``carbcma``, amounts in CAR+ cells)."""
    return [kinetics.Dose(time=0.0, amount=float(row.DOSE19), target="car19"),
            kinetics.Dose(time=0.0, amount=float(row.DOSEBCMA), target="carbcma")]


def simulate_medians(model, design: pd.DataFrame, params: pd.DataFrame) -> pd.DataFrame:
    """Noise-free predictions at every scheduled observation, from one ``simulate_batch`` call.

    Returns ``ID, TIME, OUTPUT, IPRED`` in event-table order (subject, time, output).

    Raises
    ------
    VirtualTrialError
        If any subject's solve fails (naming the subject and the solver's message), or a prediction
        is not finite.
    """
    schedule = observation_schedule()
    times = np.array(sorted(set(CART_DAYS) | set(LAB_DAYS)), dtype=float)
    doses = [subject_doses(r) for r in design.itertuples(index=False)]
    batch = model.simulate_batch(times, params={k: params[k].to_numpy() for k in params.columns}, doses=doses,
                                 rtol=RTOL, atol=ATOL)
    failed = np.flatnonzero(~batch.success)
    if failed.size:
        k = failed[0]
        raise VirtualTrialError(f"{failed.size} of {len(design)} subjects failed to solve; subject "
                                f"{design['ID'].iloc[k]}: {batch.messages[k]}")
    t_index = np.searchsorted(times, schedule["TIME"].to_numpy(dtype=float))
    frames = []
    for k, sid in enumerate(design["ID"]):
        ipred = np.array([batch.output(o)[k, i] for o, i in zip(schedule["OUTPUT"], t_index)])
        frames.append(pd.DataFrame({"ID": sid, "TIME": schedule["TIME"], "OUTPUT": schedule["OUTPUT"],
                                    "IPRED": ipred}))
    out = pd.concat(frames, ignore_index=True)
    if not np.isfinite(out["IPRED"]).all():
        bad = out[~np.isfinite(out["IPRED"])].iloc[0]
        raise VirtualTrialError(f"subject {bad.ID}: prediction of {bad.OUTPUT} at day {bad.TIME} is not finite")
    return out


def observe(medians: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Add residual error (one standard normal per row, in row order) and censor at the LLOQ.

    ``log_additive``: ``DV = f exp(add eps)``; ``proportional``: ``DV = f (1 + prop eps)``;
    ``combined``: ``DV = f + sqrt(add^2 + (prop f)^2) eps``. DV is rounded to ``ASSAY_DIGITS``
    significant digits; a rounded value below the LLOQ becomes ``CENS = 1, DV = LLOQ``.
    Returns ``medians`` with ``DV``, ``CENS`` and ``LLOQ`` added.
    """
    eps = rng.standard_normal(len(medians))
    f = medians["IPRED"].to_numpy(dtype=float)
    dv = np.empty_like(f)
    for name, spec in ERROR.items():
        m = (medians["OUTPUT"] == name).to_numpy()
        if spec["kind"] == "log_additive":
            dv[m] = f[m] * np.exp(spec["add"] * eps[m])
        elif spec["kind"] == "proportional":
            dv[m] = f[m] * (1.0 + spec["prop"] * eps[m])
        else:
            dv[m] = f[m] + np.sqrt(spec["add"] ** 2 + (spec["prop"] * f[m]) ** 2) * eps[m]
    dv = round_significant(dv, ASSAY_DIGITS)
    lloq = medians["OUTPUT"].map(LLOQ).to_numpy(dtype=float)
    cens = (dv < lloq).astype(int)
    out = medians.copy()
    out["DV"] = np.where(cens == 1, lloq, dv)
    out["CENS"] = cens
    out["LLOQ"] = lloq
    return out


def event_table(design: pd.DataFrame, observations: pd.DataFrame) -> pd.DataFrame:
    """The NONMEM-style table: per subject the two dose rows at TIME 0, then the observations.

    Dose rows: ``EVID=1, MDV=1, AMT`` (CAR+ cells), ``CMT`` the dose target, DV/OUTPUT/LLOQ missing.
    Observation rows: ``EVID=0, MDV=0``, ``OUTPUT`` the model output, ``CENS``, ``LLOQ``. Covariates
    on every row.
    """
    frames = []
    for row in design.itertuples(index=False):
        doses = pd.DataFrame({"ID": row.ID, "TIME": 0, "DV": np.nan, "MDV": 1, "EVID": 1,
                              "AMT": [row.DOSE19, row.DOSEBCMA], "CMT": ["car19", "carbcma"], "OUTPUT": "",
                              "CENS": 0, "LLOQ": np.nan})
        obs = observations[observations["ID"] == row.ID]
        obs = pd.DataFrame({"ID": row.ID, "TIME": obs["TIME"], "DV": obs["DV"], "MDV": 0, "EVID": 0, "AMT": np.nan,
                            "CMT": "", "OUTPUT": obs["OUTPUT"], "CENS": obs["CENS"], "LLOQ": obs["LLOQ"]})
        sub = pd.concat([doses, obs], ignore_index=True)
        for c in COVARIATES:
            sub[c] = getattr(row, c)
        frames.append(sub)
    table = pd.concat(frames, ignore_index=True)[list(COLUMNS)]
    for c in ("ID", "TIME", "MDV", "EVID", "CENS", "DOSE_LEVEL"):
        table[c] = table[c].astype(int)
    for c in ("CMT", "OUTPUT"):
        table[c] = table[c].replace("", np.nan)
    return table


def censoring_summary(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per output: observations, censored count and fraction (4 decimals)."""
    obs = table[table["EVID"] == 0]
    out = {}
    for name in CART_OUTPUTS + LAB_OUTPUTS:
        rows = obs[obs["OUTPUT"] == name]
        n, c = len(rows), int(rows["CENS"].sum())
        out[name] = {"n": n, "n_censored": c, "fraction": round(c / n, 4)}
    return out


def trial_spec(model, seed: int, table: pd.DataFrame) -> dict:
    """The JSON record: seed, model, typical values, omega, error models, LLOQs, schedule, versions."""
    sds = random_effect_sds(model)
    outputs = {o.name: o for o in model.model.outputs}
    fingerprint = hashlib.sha256(codegen.model_fingerprint(model.model).encode()).hexdigest()
    return {
        "description": "Seeded virtual trial of CD19 + BCMA CAR-T co-infusion in refractory SLE (simulated, not "
                       "patient data); see fits/data/README.md",
        "generator": "fits/make_virtual_trial.py",
        "seed": int(seed),
        "rng": "numpy.random.default_rng(seed) (PCG64); draw order: weights (15), etas (15 x 9, subjects in rows, "
               "parameters in random_effects order), residuals (one per observation row, in file order)",
        "package": "kinetics", "package_version": kinetics.__version__,
        "model": model.name,
        "model_structure_sha256": fingerprint,
        "solver": {"function": "CompiledModel.simulate_batch", "method": "auto", "rtol": RTOL, "atol": ATOL},
        "design": {
            "n_subjects": int(table["ID"].nunique()),
            "subjects_per_dose_level": SUBJECTS_PER_LEVEL,
            "dose_levels_car_cells_per_kg": {str(k + 1): v for k, v in enumerate(DOSE_LEVELS_PER_KG)},
            "dose_levels_source": "assumption (Feng 2025 dose levels not retrievable); CD19 and BCMA products "
                                  "escalate together, the same cells/kg of each",
            "dose_time_day": 0, "dose_targets": ["car19", "carbcma"], "dose_unit": "CAR+ cells (AMT = DOSEKG x WT)",
            "weight": {"median_kg": WT_MEDIAN_KG, "sd_log": WT_SD_LOG, "rounded_to_kg": 0.1,
                       "source": "assumption"},
            "lymphodepletion": {"t_LD_day": model.defaults["t_LD"], "f_LD": model.defaults["f_LD"],
                                "note": "Flu/Cy before day 0 is part of the model's default scenario (parameters "
                                        "t_LD, f_LD), not a dose row"},
        },
        "schedule": {
            "car_t": {"days": list(CART_DAYS), "outputs": list(CART_OUTPUTS),
                      "note": "day-0 samples are taken after the infusion (the dose rows come first)"},
            "labs": {"days": list(LAB_DAYS), "outputs": list(LAB_OUTPUTS)},
        },
        "units": {name: outputs[name].unit for name in CART_OUTPUTS + LAB_OUTPUTS},
        "typical_values": {k: float(v) for k, v in model.defaults.items()},
        "random_effects": {
            "omega_sd": sds,
            "omega_variance": {k: float(round_significant(v * v, 12)) for k, v in sds.items()},
            "source": f"models/{model.name}.toml [metadata] iiv (SD of log-normal etas; variance = SD^2)",
            "rounding": f"individual values rounded to {PARAM_DIGITS} significant digits before simulating",
        },
        "error": ERROR,
        "error_source": "assumption (assay precision not published for these assays): qPCR 0.5 and flow 0.35 "
                        "log-scale SD, B cells 0.3; IgG 8 % proportional; anti-dsDNA 2 IU/mL + 15 %",
        "lloq": {name: {"value": LLOQ[name], "unit": outputs[name].unit, "source": LLOQ_SOURCE[name]}
                 for name in CART_OUTPUTS + LAB_OUTPUTS},
        "dv_rounding": f"{ASSAY_DIGITS} significant digits; a rounded DV below LLOQ is CENS=1 with DV=LLOQ",
        "log_outputs": list(LOG_OUTPUTS),
        "censored": censoring_summary(table),
        "files": {"data": "virtual_trial.csv", "truth": "virtual_trial_truth.csv", "spec": "virtual_trial.json"},
    }


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    # repr floats (pandas default) round-trip; '.' marks not-applicable cells (NONMEM style)
    frame.to_csv(path, index=False, na_rep=".", lineterminator="\n")


def main(seed: int = DEFAULT_SEED, out_dir: str | Path = DEFAULT_OUT) -> VirtualTrial:
    """Generate the virtual trial with ``seed`` and write the three files to ``out_dir``.

    Parameters
    ----------
    seed
        Seed of ``numpy.random.default_rng``; the same seed gives byte-identical files.
    out_dir
        Folder for ``virtual_trial.csv``, ``virtual_trial_truth.csv`` and ``virtual_trial.json``
        (created if missing).

    Returns
    -------
    VirtualTrial

    Raises
    ------
    VirtualTrialError
        If a subject's solve fails or a parameter draw leaves the model's bounds.
    """
    rng = np.random.default_rng(seed)
    model = kinetics.load_model(MODEL)
    design = design_subjects(rng)
    params = draw_parameters(model, len(design), rng)
    medians = simulate_medians(model, design, params)
    observations = observe(medians, rng)
    table = event_table(design, observations)
    truth = pd.concat([design, params], axis=1)
    spec = trial_spec(model, seed, table)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / "virtual_trial.csv", out / "virtual_trial_truth.csv", out / "virtual_trial.json")
    _write_csv(table, paths[0])
    _write_csv(truth, paths[1])
    paths[2].write_text(json.dumps(spec, indent=1, ensure_ascii=True) + "\n")
    return VirtualTrial(data=table, truth=truth, medians=medians, spec=spec, paths=paths)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python fits/make_virtual_trial.py", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"RNG seed (default {DEFAULT_SEED})")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default fits/data)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = _parse(None)
    result = main(seed=args.seed, out_dir=args.out)
    n_obs = int((result.data["EVID"] == 0).sum())
    print(f"wrote {', '.join(str(p) for p in result.paths)}: {result.data['ID'].nunique()} subjects, "
          f"{n_obs} observations")
    for name, c in result.spec["censored"].items():
        print(f"  {name}: {c['n_censored']}/{c['n']} censored ({100 * c['fraction']:.1f} %)")
