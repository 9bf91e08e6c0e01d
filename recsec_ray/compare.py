"""A sweep's MLflow runs -> tables (defense x poison rate, mean ± std over seeds) and plots
(metric vs poison rate per defense), logged back to the sweep's parent run (DESIGN §7).

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


def summary(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows = defense, columns = the column axis, cells = (mean, std, n) over seeds."""
    col = col_axis(df)
    rows = ROW_AXIS if ROW_AXIS in df.columns else col
    data = df.dropna(subset=[metric])
    stats = data.groupby([rows, col])[metric].agg(["mean", "std", "count"])
    return stats.reset_index()


def _cell(mean: float, std: float, n: int) -> str:
    if n <= 1 or math.isnan(std):
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {std:.4f}"


def table(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The printable table of ``metric``: strings 'mean ± std' (std over seeds)."""
    stats = summary(df, metric)
    col = col_axis(df)
    rows = ROW_AXIS if ROW_AXIS in df.columns else col
    stats["cell"] = [_cell(m, s, int(n)) for m, s, n in
                     zip(stats["mean"], stats["std"], stats["count"], strict=True)]
    out = stats.pivot(index=rows, columns=col, values="cell").fillna("–")
    out.columns = [str(c) for c in out.columns]
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
    """Every table as Markdown: one per group and metric present."""
    out = []
    n_seeds = df[SEED].nunique() if SEED in df.columns else 1
    col = col_axis(df)
    for title, sub in groups(df):
        for metric in present_metrics(sub, metrics):
            out.append(f"### {metric} — {title} (rows: defense, columns: {col}; mean ± std "
                       f"over {n_seeds} seed(s))")
            out.append(_markdown(table(sub, metric), "defense"))
            out.append("")
    return "\n".join(out) if out else "(no metrics to tabulate)"


# ---- plots ------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_") or "all"


def plot(df: pd.DataFrame, metric: str, out_dir: Path) -> list[Path]:
    """One PNG per group: ``metric`` against the column axis, a line per defense."""
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
        rows = ROW_AXIS if ROW_AXIS in sub.columns else col
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        order = sorted(stats[col].unique(), key=lambda v: (str(type(v)), v))
        for name, part in stats.groupby(rows, sort=True):
            part = part.set_index(col).reindex(order).dropna(subset=["mean"])
            xs = part.index.to_list() if numeric_x else [order.index(v) for v in part.index]
            ax.errorbar(xs, part["mean"], yerr=part["std"].fillna(0.0), marker="o", capsize=3,
                        label=str(name))
        if not numeric_x:
            ax.set_xticks(range(len(order)), [str(v) for v in order])
        ax.set_xlabel(col)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} — {title}", fontsize=9)
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
    plotted = [m for m in dict.fromkeys([*metrics[:1], "hr@10"]) if m in metrics]
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
