"""A sweep's MLflow runs -> tables (defense x poison rate, mean ± 95 % CI over seeds, and each
defense's paired difference from the matching undefended trial) and plots (metric vs poison
rate per defense, with CI bands), logged back to the sweep's parent run (DESIGN §7).

The engine of ``recsec compare`` (the command line lives in ``cli.py``), of the notebook, and
of the tables a sweep prints and logs when it ends.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import RecsecError
from .stats import mean_ci, paired_difference
from .tracking import (
    HEADLINE_METRICS,
    TAG_KIND,
    TAG_PARENT,
    TAG_TRIAL_KEY,
    TrackingStore,
    canonical_name,
    with_retry,
)

TABLE_METRICS = HEADLINE_METRICS
ROW_AXIS = "defense.name"
# The first of these with more than one value becomes the table's columns / the plot's x.
COL_AXES = ("attack.poison_rate", "attack.badrec_fraction", "attack.trigger_level",
            "attack.name", "model.backbone")
# Settings that split tables and plots into groups when they vary within the sweep.
GROUP_AXES = ("data.name", "model.backbone", "model.items", "attack.name",
              "attack.trigger_level", "attack.poison_rate", "attack.badrec_fraction")
SEED = "seed"
BASELINE = "none"  # the arm every other defense is paired with


@dataclass
class Comparison:
    frame: pd.DataFrame  # one row per finished trial
    text: str  # the tables as Markdown
    files: list[Path]  # tables (.md, .csv) and plots (.png) written under the output folder
    parent_run_id: str | None


# ---- frames -----------------------------------------------------------------------------------
def frame_from_rows(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Tune results (swept values + metrics per trial) as the frame the tables read."""
    return _numeric(pd.DataFrame(rows))


def load_runs(experiment: str, *, tracking_uri: str | None = None,
              parent_run_id: str | None = None) -> tuple[pd.DataFrame, str]:
    """Finished trial runs of one sweep (default: the latest sweep of the experiment), one row
    per trial key, with params (dotted keys) and metrics (canonical keys). Returns the frame
    and the parent run id."""
    store = TrackingStore(tracking_uri)
    exp = with_retry(store.client.get_experiment_by_name, experiment)
    if exp is None:
        raise RecsecError(f"--experiment {experiment!r}: no such MLflow experiment in "
                          f"{store.uri}")
    if parent_run_id is None:
        parent = store.find_sweep(experiment)
        if parent is None:
            raise RecsecError(f"--experiment {experiment!r}: it holds no sweep parent run "
                              f"(tag {TAG_KIND}=sweep)")
        parent_run_id = parent.info.run_id
    runs = store._search(exp.experiment_id,
                         f"tags.`{TAG_PARENT}` = '{parent_run_id}' and "
                         "attributes.status = 'FINISHED'",
                         order_by=["attributes.start_time ASC"])
    by_key: dict[str, dict[str, Any]] = {}
    for run in runs:
        row: dict[str, Any] = dict(run.data.params)
        row.update({canonical_name(k): v for k, v in run.data.metrics.items()})
        row["run_id"] = run.info.run_id
        by_key[run.data.tags.get(TAG_TRIAL_KEY, run.info.run_id)] = row
    if not by_key:
        raise RecsecError(f"--experiment {experiment!r}: sweep {parent_run_id} has no finished "
                          "trial runs yet")
    return _numeric(pd.DataFrame(list(by_key.values()))), parent_run_id


def _numeric(df: pd.DataFrame) -> pd.DataFrame:
    """MLflow params are strings: columns whose every value parses become numbers."""
    for col in df.columns:
        if pd.api.types.is_object_dtype(df[col]) or pd.api.types.is_string_dtype(df[col]):
            conv = pd.to_numeric(df[col], errors="coerce")
            if conv.notna().sum() == df[col].notna().sum() and df[col].notna().any():
                df[col] = conv
    return df


# ---- tables -----------------------------------------------------------------------------------
def _varying(df: pd.DataFrame, cols: tuple[str, ...]) -> list[str]:
    return [c for c in cols if c in df.columns and df[c].nunique(dropna=True) > 1]


def col_axis(df: pd.DataFrame) -> str:
    """The first varying column axis, else the first present (one column), else the seed."""
    present = [c for c in COL_AXES if c in df.columns]
    return (_varying(df, COL_AXES) or present or [SEED])[0]


def groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, sub-frame) for each combination of the settings that vary besides the axes."""
    cols = [c for c in _varying(df, GROUP_AXES) if c != col_axis(df)]
    if not cols:
        return [("all trials", df)]
    return [(", ".join(f"{c.split('.')[-1]}={v}" for c, v in
                       zip(cols, key if isinstance(key, tuple) else (key,), strict=True)), sub)
            for key, sub in df.groupby(cols, sort=True)]


def arms(df: pd.DataFrame) -> pd.Series:
    """Each trial's row label: its defense, plus any other defense setting that varies in the
    frame (``lorec [lorec_init_weight=100]``), so two settings of one defense stay apart."""
    if ROW_AXIS not in df.columns:  # one defense, not swept
        return pd.Series(["(fixed)"] * len(df), index=df.index)
    label = df[ROW_AXIS].astype(str)
    extra = _varying(df, tuple(c for c in df.columns
                               if c.startswith("defense.") and c != ROW_AXIS))
    for c in extra:
        label = label + df[c].map(lambda v, c=c: "" if pd.isna(v)
                                  else f" [{c.split('.', 1)[1]}={v}]")
    return label


def _cells(df: pd.DataFrame, metric: str) -> dict[tuple[str, Any], dict[Any, float]]:
    """(arm, column value) -> {seed: metric} over the trials that logged it."""
    col = col_axis(df)
    data = df.dropna(subset=[metric]).assign(_arm=arms(df))
    seeds = data[SEED] if SEED in data.columns else pd.Series(range(len(data)), index=data.index)
    out: dict[tuple[str, Any], dict[Any, float]] = {}
    for arm, x, seed, value in zip(data["_arm"], data[col], seeds, data[metric], strict=True):
        out.setdefault((arm, x), {})[seed] = float(value)
    return out


def summary(df: pd.DataFrame, metric: str, paired: bool = False) -> pd.DataFrame:
    """One row per (arm, column value): mean, CI half-width and n over seeds. ``paired``: of
    the per-seed difference from the matching ``none`` trial instead (arms with no baseline
    are left out)."""
    cells = _cells(df, metric)
    rows = []
    for (arm, x), by_seed in sorted(cells.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        if paired:
            base = cells.get((BASELINE, x))
            if arm == BASELINE or base is None:
                continue
            est = paired_difference(by_seed, base)
        else:
            est = mean_ci(list(by_seed.values()))
        rows.append({"arm": arm, "x": x, "mean": est.mean, "half": est.half, "n": est.n,
                     "estimate": est})
    return pd.DataFrame(rows, columns=["arm", "x", "mean", "half", "n", "estimate"])


def table(df: pd.DataFrame, metric: str, paired: bool = False) -> pd.DataFrame:
    """The printable table of ``metric``: 'mean ± half-width of the 95 % CI' over seeds; with
    ``paired``, of the difference from the matching ``none`` trial, ``*`` where that CI
    excludes zero."""
    stats = summary(df, metric, paired)
    stats["cell"] = [e.text(marker=paired) for e in stats["estimate"]]
    out = stats.pivot(index="arm", columns="x", values="cell").fillna("–")
    out.columns = [str(c) for c in out.columns]
    out.index.name = None
    return out


def _markdown(frame: pd.DataFrame, corner: str) -> str:
    header = [corner] + list(frame.columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for idx, row in frame.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [str(v) for v in row]) + " |")
    return "\n".join(lines)


def present_metrics(df: pd.DataFrame, metrics: list[str] | tuple[str, ...]) -> list[str]:
    return [m for m in dict.fromkeys(metrics) if m in df.columns and df[m].notna().any()]


def format_tables(df: pd.DataFrame, metrics: list[str] | tuple[str, ...] = TABLE_METRICS) -> str:
    """Every table as Markdown: per group and metric present, the mean ± 95 % CI over seeds
    and, where the frame has ``none`` trials to pair with, the paired difference from them."""
    out = []
    n_seeds = df[SEED].nunique() if SEED in df.columns else 1
    col = col_axis(df)
    for title, sub in groups(df):
        has_base = (arms(sub) == BASELINE).any() and arms(sub).nunique() > 1
        for metric in present_metrics(sub, metrics):
            out.append(f"### {metric} — {title} (rows: defense, columns: {col}; mean ± 95 % CI "
                       f"over {n_seeds} seed(s))")
            out.append(_markdown(table(sub, metric), "defense"))
            out.append("")
            if has_base and not summary(sub, metric, paired=True).empty:
                out.append(f"{metric} minus the matching `none` trial (same seed, targets and "
                           "fake users), mean ± 95 % CI; * = the CI excludes 0")
                out.append("")
                out.append(_markdown(table(sub, metric, paired=True), "defense − none"))
                out.append("")
    return "\n".join(out) if out else "(no metrics to tabulate)"


# ---- plots ------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_") or "all"


def plot(df: pd.DataFrame, metric: str, out_dir: Path) -> list[Path]:
    """One PNG per group: ``metric`` against the column axis, a line per defense, its 95 % CI
    over seeds as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    col = col_axis(df)
    numeric_x = pd.api.types.is_numeric_dtype(df[col]) if col in df.columns else False
    paths = []
    for title, sub in groups(df):
        if metric not in sub.columns or not sub[metric].notna().any():
            continue
        stats = summary(sub, metric)
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        order = sorted(stats["x"].unique(), key=lambda v: (str(type(v)), v))
        for name, part in stats.groupby("arm", sort=True):
            part = part.set_index("x").reindex(order).dropna(subset=["mean"])
            xs = part.index.to_list() if numeric_x else [order.index(v) for v in part.index]
            line = ax.plot(xs, part["mean"], marker="o", label=str(name))[0]
            half = part["half"].fillna(0.0)
            ax.fill_between(xs, part["mean"] - half, part["mean"] + half, alpha=0.2,
                            color=line.get_color(), linewidth=0)
        if not numeric_x:
            ax.set_xticks(range(len(order)), [str(v) for v in order])
        ax.set_xlabel(col)
        ax.set_ylabel(metric)
        n_seeds = sub[SEED].nunique() if SEED in sub.columns else 1
        ax.set_title(f"{metric} — {title}\n(bands: 95 % CI over {n_seeds} seed(s))", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(title="defense", fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{_slug(metric)}_vs_{_slug(col)}__{_slug(title)}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


# ---- per-trial table -----------------------------------------------------------------------------
def trials_table(trials: list[dict[str, Any]], keys: list[str],
                 metrics: list[str] | tuple[str, ...] = TABLE_METRICS) -> pd.DataFrame:
    """One row per trial, failed ones included: its swept values, status, headline metrics
    and, for a failure, the error's one line (what Tune's status table showed, once)."""
    frame = pd.DataFrame(trials)
    shown = [m for m in metrics if m in frame.columns and frame[m].notna().any()]
    cols = [c for c in [*keys, "status", *shown, "trial_busy_s", "error"] if c in frame.columns]
    out = frame[cols].reset_index(drop=True)
    if "trial_busy_s" in out.columns:
        out["trial_busy_s"] = out["trial_busy_s"].round(1)
    return out


def markdown(frame: pd.DataFrame) -> str:
    """Any frame as a Markdown table (floats to at most 4 decimals, gaps as '–')."""
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        return f"{v:.4f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


# ---- the command ------------------------------------------------------------------------------
def write_results(df: pd.DataFrame, title: str, metrics: list[str], out_dir: Path
                  ) -> tuple[str, list[Path]]:
    """tables.md, runs.csv and a plot per group of the first metric and HR@10."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = format_tables(df, metrics)
    files = [out_dir / "tables.md", out_dir / "runs.csv"]
    files[0].write_text(f"# {title}\n\n{text}\n")
    df.to_csv(files[1], index=False)
    # the first metric beside clean accuracy: full-ranking HR@10, and HR@1 on the candidate
    # lists when the first metric is one of theirs (ASR@1)
    clean = ["hr@10", "hr@1"] if metrics[:1] and metrics[0].endswith("@1") else ["hr@10"]
    plotted = [m for m in dict.fromkeys([*metrics[:1], *clean]) if m in metrics]
    for m in plotted:
        files += plot(df, m, out_dir)
    return text, files


def compare(experiment: str, *, metric: str = "t_hr@50", out: str | Path = "compare_out",
            tracking_uri: str | None = None, parent_run_id: str | None = None) -> Comparison:
    """Tables and plots of one sweep, written under ``out`` and logged to its parent run
    (artifact folder ``compare/``)."""
    df, parent = load_runs(experiment, tracking_uri=tracking_uri, parent_run_id=parent_run_id)
    metrics = present_metrics(df, [metric, *TABLE_METRICS])
    if metric not in metrics:
        known = sorted(c for c in df.columns if df[c].dtype.kind == "f")
        raise RecsecError(f"--metric {metric!r}: not logged by this sweep (logged: "
                          f"{', '.join(known[:30])})")
    text, files = write_results(df, f"{experiment} (parent run {parent})", metrics, Path(out))
    store = TrackingStore(tracking_uri)
    store.log_files(parent, {p.name: p.read_bytes() for p in files}, "compare")
    return Comparison(frame=df, text=text, files=files, parent_run_id=parent)


def log_sweep_results(store: TrackingStore, experiment: str, parent_run_id: str, metric: str,
                      trials: pd.DataFrame, out_dir: Path) -> list[str]:
    """What a sweep leaves on its parent run when it ends (artifact folder ``results/``): the
    tables and plots of its finished trials as MLflow holds them (``recsec compare``'s, so a
    resumed sweep's earlier trials count), and the per-trial table, failures included.
    Returns the artifact names."""
    files = [out_dir / "trials.md", out_dir / "trials.csv"]
    out_dir.mkdir(parents=True, exist_ok=True)
    files[0].write_text(f"# {experiment}: trials of sweep run {parent_run_id}\n\n"
                        f"{markdown(trials)}\n")
    trials.to_csv(files[1], index=False)
    try:
        df, _ = load_runs(experiment, tracking_uri=store.uri, parent_run_id=parent_run_id)
    except RecsecError:  # no trial finished: the per-trial table says why
        df = None
    if df is not None:
        metrics = present_metrics(df, [metric, *TABLE_METRICS])
        files += write_results(df, f"{experiment} (parent run {parent_run_id})", metrics,
                               out_dir)[1]
    store.log_files(parent_run_id, {p.name: p.read_bytes() for p in files}, "results")
    return [f"results/{p.name}" for p in files]
