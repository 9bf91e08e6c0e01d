"""Studies: several sweeps whose trials are read together as figures (``sweeps/paper_tables.py``).

A study is a list of sweeps (grid, fixed values) sharing one MLflow experiment,
``<prefix>-<study>``, and a table: ``dose`` (each attack's push at each budget against no
attack) or ``defense`` (each defense against no defense, per value of one setting). Every cell
is a mean ± 95 % CI over seeds; against its base, a paired difference (``*`` where its CI
excludes 0) and the mean of the per-seed ratios (``stats``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pandas as pd

from ..compare import load_runs, markdown
from ..errors import RecsecError
from ..stats import mean_ci, paired_difference, paired_ratio
from .driver import run_sweep
from .grid import SweepSpec

PAIRED = ("t_hr@50", "hr@10", "asr@10", "hr@1", "asr@1")  # also shown against the base arm


@dataclass(frozen=True)
class Study:
    sweeps: list[tuple[dict[str, list[Any]], dict[str, Any]]]  # (grid, fixed) per sweep
    table: str  # "dose" | "defense" | "backdoor" | "detect"
    group: str = "attack.name"  # defense tables: one table per value of this setting
    values: list[Any] = field(default_factory=list)
    arms: list[Any] = field(default_factory=list)  # dose: attacks; defense: defenses
    metrics: list[str] = field(default_factory=lambda: ["t_hr@50", "hr@10"])
    defense_metrics: list[str] = field(default_factory=list)  # backdoor: the defenses' table


def by_seed(df: pd.DataFrame, metric: str, **where: Any) -> dict[int, float]:
    """{seed: metric} of the trials matching ``where`` (dotted keys)."""
    sel = df
    for key, value in where.items():
        sel = sel[sel[key] == value]
    return {int(s): float(v) for s, v in zip(sel["seed"], sel[metric], strict=True)
            if pd.notna(v)}


def _short(key: str) -> str:
    """``attack.name`` -> ``attack``, ``attack.trigger_level`` -> ``trigger_level``."""
    section, _, field = key.rpartition(".")
    return section if field == "name" else field


def cells(df: pd.DataFrame, arms: list[dict[str, Any]], metrics: list[str],
          base: dict[str, Any], paired: tuple[str, ...] = PAIRED) -> pd.DataFrame:
    """One row per arm: each metric's mean ± CI and, for ``paired`` metrics of arms other
    than ``base``, the paired difference and ratio to it."""
    rows = []
    for arm in arms:
        row = {"arm": " ".join(f"{_short(k)}={v}" for k, v in arm.items())}
        for m in (m for m in metrics if m in df.columns):
            vals = by_seed(df, m, **arm)
            row[m] = mean_ci(list(vals.values())).text(3)
            if arm != base and m in paired:
                ref = by_seed(df, m, **base)
                row[f"{m} − base"] = paired_difference(vals, ref).text(3, marker=True)
                row[f"{m} ÷ base"] = paired_ratio(vals, ref).text(2)
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def dose_table(df: pd.DataFrame, study: Study) -> str:
    out = []
    none = {"attack.name": "none"}
    rates = sorted(df.loc[df["attack.name"] != "none", "attack.poison_rate"].unique())
    for attack in study.arms:
        arms = [{"attack.name": attack, "attack.poison_rate": r} for r in rates]
        out.append(f"**{attack}**, undefended (base: no attack, same seed and targets)\n")
        out.append(markdown(cells(df, [none, *arms], study.metrics, none)))
        steps = []
        for (lo, arm_lo), (hi, arm_hi) in pairwise(zip(rates, arms, strict=True)):
            d = paired_difference(by_seed(df, "t_hr@50", **arm_hi),
                                  by_seed(df, "t_hr@50", **arm_lo))
            steps.append(f"{lo:g} → {hi:g}: {d.text(4, marker=True)}")
        out.append("\nt_hr@50 step, paired by seed: " + "; ".join(steps) + "\n")
    return "\n".join(out)


def defense_table(df: pd.DataFrame, study: Study) -> str:
    out = []
    for value in study.values:
        base = {study.group: value, "defense.name": "none"}
        arms = [{study.group: value, "defense.name": d} for d in study.arms]
        out.append(f"**{study.group.split('.')[-1]}={value}** (base: no defense, same seed)\n")
        out.append(markdown(cells(df, [base, *arms], study.metrics, base)))
        out.append("")
    return "\n".join(out)


def backdoor_table(df: pd.DataFrame, study: Study) -> str:
    """Per victim (``study.values``) and trigger level: the clean model (no attack) and BadRec
    at each poisoned share, paired with the clean model of the same seed; then each defense
    against the undefended trial at the share the defenses ran at."""
    out = []
    attacked = df[(df["attack.name"] == "badrec") & (df["defense.name"] == "none")]
    shares = sorted(attacked["attack.badrec_fraction"].unique())
    defended = df[df["defense.name"] != "none"]
    for victim in study.values:
        clean = {"attack.name": "none", "model.backbone": victim, "defense.name": "none"}
        for level in study.arms:
            arms = [{"model.backbone": victim, "attack.trigger_level": level,
                     "attack.badrec_fraction": f, "attack.name": "badrec",
                     "defense.name": "none"} for f in shares]
            out.append(f"**{victim}, {level} trigger** (base: {victim} trained without the "
                       "attack, same seed)\n")
            out.append(markdown(cells(df, [clean, *arms], study.metrics, clean)))
            out.append("")
    for victim in study.values:
        for level in study.arms if len(defended) else []:
            for share in sorted(defended["attack.badrec_fraction"].unique()):
                base = {"model.backbone": victim, "attack.trigger_level": level,
                        "attack.badrec_fraction": share, "defense.name": "none"}
                arms = [{**base, "defense.name": d}
                        for d in sorted(defended["defense.name"].unique())]
                out.append(f"**{victim}, {level} trigger, {share:g} poisoned: defenses** "
                           "(base: undefended, same seed)\n")
                out.append(markdown(cells(df, [base, *arms],
                                          study.defense_metrics or study.metrics, base)))
                out.append("")
    return "\n".join(out)


def detect_table(df: pd.DataFrame, study: Study) -> str:
    """Per defense (``study.values``): how it detects each attack's fake users (``study.arms``),
    every metric paired with the first attack's trial of the same seed."""
    out = []
    for defense in study.values:
        arms = [{"defense.name": defense, "attack.name": a} for a in study.arms]
        out.append(f"**{defense}** (base: {study.arms[0]} fake users, same seed)\n")
        out.append(markdown(cells(df, arms, study.metrics, arms[0], tuple(study.metrics))))
        out.append("")
    return "\n".join(out)


def run_study(name: str, study: Study, seeds: list[int], base: dict[str, Any],
              uri: str | None) -> pd.DataFrame:
    frames = []
    for grid, fixed in study.sweeps:
        spec = SweepSpec(name=name, grid={**grid, "seed": seeds}, fixed={**base, **fixed},
                         mlflow_uri=uri)
        result = run_sweep(spec)
        for err in result.errors:
            print(f"[study] FAILED trial {err}", flush=True)
        frame, _ = load_runs(name, tracking_uri=uri, parent_run_id=result.parent_run_id)
        print(f"[study] {name}: {len(frame)} trials in {result.wall_s:.0f} s (parent run "
              f"{result.parent_run_id})", flush=True)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def from_mlflow(name: str, study: Study, uri: str | None) -> pd.DataFrame:
    """The study's latest sweeps as MLflow holds them: its tables again, nothing run."""
    from ..tracking import TAG_KIND, TrackingStore

    store = TrackingStore(uri)
    exp = store.client.get_experiment_by_name(name)
    if exp is None:
        raise RecsecError(f"--from-mlflow: no experiment {name} in {store.uri}")
    parents = store.client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'sweep'",
                                       order_by=["attributes.start_time DESC"],
                                       max_results=len(study.sweeps))
    frames = []
    for parent in parents:
        try:
            frames.append(load_runs(name, tracking_uri=uri,
                                    parent_run_id=parent.info.run_id)[0])
        except RecsecError as err:  # an interrupted sweep with no finished trial
            print(f"[study] skipped: {err}", flush=True)
    if not frames:
        raise RecsecError(f"--from-mlflow: {name} has no finished trials")
    return pd.concat(frames, ignore_index=True)


def main_studies(description: str | None, studies: dict[str, Study], base: dict[str, Any],
                 prefix: str, argv: list[str] | None = None) -> int:
    """A studies script's whole ``main``: run (or reload) the chosen studies, print their
    tables and write them to ``--out``."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(studies), help="comma-separated studies")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (>= 3 for a CI)")
    p.add_argument("--mlflow-uri", default=None)
    p.add_argument("--out", default=f"{prefix}.md")
    p.add_argument("--from-mlflow", action="store_true",
                   help="tables from the studies' latest sweeps in MLflow; run nothing")
    args = p.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in studies]
    if unknown:
        p.error(f"--only: unknown {unknown} (known: {', '.join(studies)})")
    seeds = [int(s) for s in args.seeds.split(",")]
    text = ["Mean ± 95 % CI (t) over seeds; `*`: the paired CI excludes 0.\n"]
    try:
        for name in chosen:
            study, exp = studies[name], f"{prefix}-{name}"
            df = from_mlflow(exp, study, args.mlflow_uri) if args.from_mlflow else \
                run_study(exp, study, seeds, base, args.mlflow_uri)
            table = {"dose": dose_table, "defense": defense_table,
                     "backdoor": backdoor_table, "detect": detect_table}[study.table]
            text += [f"## {name} (seeds {sorted(df['seed'].unique().tolist())})\n",
                     table(df, study)]
            Path(args.out).write_text("\n".join(text) + "\n")
            print("\n".join(text[-2:]), flush=True)
    except RecsecError as err:
        print(f"studies: error: {err}")
        return 2
    print(f"[study] tables written to {args.out}")
    return 0
