"""The figures of README's "What the offline defaults measure", regenerated from sweeps over
several seeds: each printed as mean ± 95 % CI, defenses as paired differences (and ratios)
against the undefended trial of the same seed, targets and fake users.

    .venv/bin/python sweeps/paper_tables.py                   # every study, ML-100K, SASRec
    .venv/bin/python sweeps/paper_tables.py --only dose,lorec --seeds 0,1,2,3,4

Studies (each one sweep, its own MLflow experiment ``paper-<study>``):
  dose     undefended Random / Bandwagon / DP at 1, 5, 10 % (and no attack): does the push
           grow with the dose?
  lorec    LoRec and its control (same calibrator and schedule, weights held at 1) against
           Bandwagon and DP at 5 %, every arm with the same model selection
  llm4dec  LLM4Dec (the defender simulates Random) against Bandwagon at 5 %
  pscanner P-Scanner and ONION against BadRec (1 % of training examples) on text SASRec, per
           trigger level, with the attacker's and defender's trigger families disjoint
The tables go to stdout and to ``paper_tables.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from recsec_ray.compare import load_runs, markdown
from recsec_ray.errors import RecsecError
from recsec_ray.stats import mean_ci, paired_difference, paired_ratio
from recsec_ray.sweep.driver import run_sweep
from recsec_ray.sweep.grid import SweepSpec

BASE = {"data.name": "ml-100k", "model.backbone": "sasrec"}
# study -> sweeps (grid, fixed values); a study's sweeps share an MLflow experiment
STUDIES: dict[str, list[tuple[dict, dict]]] = {
    "dose": [({"attack.name": ["none"], "defense.name": ["none"]}, {}),
             ({"attack.name": ["random", "bandwagon", "dp"],
               "attack.poison_rate": [0.01, 0.05, 0.1], "defense.name": ["none"]}, {})],
    # the fast LoRec schedule selects from epoch 3 (index 2): every arm does the same
    "lorec": [({"attack.name": [attack], "attack.poison_rate": [0.05],
                "defense.name": ["none", "lorec", "lorec_control"]},
               {"model.select_after": 2}) for attack in ("bandwagon", "dp")],
    "llm4dec": [({"attack.name": ["bandwagon"], "attack.poison_rate": [0.05],
                  "defense.name": ["none", "llm4dec"]}, {})],
    "pscanner": [({"attack.trigger_level": ["char", "word", "sentence"],
                   "defense.name": ["none", "pscanner", "onion"]},
                  {"attack.name": "badrec", "model.items": "text"})],
}


def from_mlflow(study: str, uri: str | None) -> pd.DataFrame:
    """The study's latest sweeps as MLflow holds them (``--from-mlflow``: tables again
    without running anything)."""
    from recsec_ray.tracking import TAG_KIND, TrackingStore

    store = TrackingStore(uri)
    exp = store.client.get_experiment_by_name(f"paper-{study}")
    if exp is None:
        raise SystemExit(f"--from-mlflow: no experiment paper-{study} in {store.uri}")
    parents = store.client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'sweep'",
                                       order_by=["attributes.start_time DESC"],
                                       max_results=len(STUDIES[study]))
    frames = []
    for parent in parents:
        try:
            frames.append(load_runs(exp.name, tracking_uri=uri,
                                    parent_run_id=parent.info.run_id)[0])
        except RecsecError as err:  # an interrupted sweep with no finished trial
            print(f"[paper_tables] skipped: {err}", flush=True)
    if not frames:
        raise SystemExit(f"--from-mlflow: paper-{study} has no finished trials")
    return pd.concat(frames, ignore_index=True)


def run(study: str, seeds: list[int], uri: str | None) -> pd.DataFrame:
    frames = []
    for grid, fixed in STUDIES[study]:
        spec = SweepSpec(name=f"paper-{study}", grid={**grid, "seed": seeds},
                         fixed={**BASE, **fixed}, mlflow_uri=uri)
        result = run_sweep(spec)
        for err in result.errors:
            print(f"[paper_tables] FAILED trial {err}", flush=True)
        frame, _ = load_runs(spec.name, tracking_uri=uri, parent_run_id=result.parent_run_id)
        print(f"[paper_tables] {study}: {len(frame)} trials in {result.wall_s:.0f} s "
              f"(MLflow experiment {spec.name}, parent run {result.parent_run_id})", flush=True)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _by_seed(df: pd.DataFrame, metric: str, **where: object) -> dict[int, float]:
    sel = df
    for key, value in where.items():
        sel = sel[sel[key] == value]
    return {int(s): float(v) for s, v in zip(sel["seed"], sel[metric], strict=True)
            if pd.notna(v)}


def _cells(df: pd.DataFrame, arms: list[dict], metrics: list[str],
           baseline: dict | None = None) -> pd.DataFrame:
    rows = []
    for arm in arms:
        row = {"arm": " ".join(f"{k.split('.')[-1]}={v}" for k, v in arm.items())}
        for m in metrics:
            if m not in df.columns:
                continue
            vals = _by_seed(df, m, **arm)
            row[m] = mean_ci(list(vals.values())).text(3)
            if baseline is not None and arm != baseline and m in ("t_hr@50", "hr@10",
                                                                   "asr@10"):
                base = _by_seed(df, m, **baseline)
                row[f"{m} − base"] = paired_difference(vals, base).text(3, marker=True)
                row[f"{m} ÷ base"] = paired_ratio(vals, base).text(2)
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def dose_tables(df: pd.DataFrame) -> str:
    out = []
    none = {"attack.name": "none"}
    for attack in ("random", "bandwagon", "dp"):
        arms = [{"attack.name": attack, "attack.poison_rate": r} for r in (0.01, 0.05, 0.1)]
        out.append(f"**{attack}**, undefended (base: no attack, same seed and targets)\n")
        out.append(markdown(_cells(df, [none, *arms], ["t_hr@50", "hr@10"], none)))
        steps = []
        for lo, hi in ((0.01, 0.05), (0.05, 0.1)):
            d = paired_difference(_by_seed(df, "t_hr@50", **{"attack.name": attack,
                                                            "attack.poison_rate": hi}),
                                  _by_seed(df, "t_hr@50", **{"attack.name": attack,
                                                            "attack.poison_rate": lo}))
            steps.append(f"{lo:g} → {hi:g}: {d.text(4, marker=True)}")
        out.append("\nt_hr@50 step, paired by seed: " + "; ".join(steps) + "\n")
    return "\n".join(out)


def defense_tables(df: pd.DataFrame, group: str, values: list, defenses: list[str],
                   metrics: list[str]) -> str:
    out = []
    for value in values:
        base = {group: value, "defense.name": "none"}
        arms = [{group: value, "defense.name": d} for d in defenses]
        out.append(f"**{group.split('.')[-1]}={value}** (base: no defense, same seed)\n")
        out.append(markdown(_cells(df, [base, *arms], metrics, base)))
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(STUDIES), help="comma-separated studies")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (>= 3 for a CI)")
    p.add_argument("--mlflow-uri", default=None)
    p.add_argument("--out", default="paper_tables.md")
    p.add_argument("--from-mlflow", action="store_true",
                   help="tables from the studies' latest sweeps in MLflow; run nothing")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    studies = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in studies if s not in STUDIES]
    if unknown:
        p.error(f"--only: unknown {unknown} (known: {', '.join(STUDIES)})")
    text = [f"Seeds {seeds}; mean ± 95 % CI (t) over seeds; `*`: the paired CI excludes 0.\n"]
    for study in studies:
        df = from_mlflow(study, args.mlflow_uri) if args.from_mlflow else \
            run(study, seeds, args.mlflow_uri)
        text.append(f"## {study}\n")
        if study == "dose":
            text.append(dose_tables(df))
        elif study == "lorec":
            text.append(defense_tables(df, "attack.name", ["bandwagon", "dp"],
                                       ["lorec", "lorec_control"],
                                       ["t_hr@50", "hr@10", "user_auc", "user_f1"]))
        elif study == "llm4dec":
            text.append(defense_tables(df, "attack.name", ["bandwagon"], ["llm4dec"],
                                       ["t_hr@50", "hr@10", "user_auc", "user_f1"]))
        else:
            text.append(defense_tables(df, "attack.trigger_level", ["char", "word", "sentence"],
                                       ["pscanner", "onion"],
                                       ["asr@10", "asr_base@10", "hr@10", "item_auc_scanner",
                                        "item_f1_scanner", "item_auc", "item_f1"]))
        Path(args.out).write_text("\n".join(text) + "\n")
        print("\n".join(text[-2:]), flush=True)
    print(f"[paper_tables] written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
