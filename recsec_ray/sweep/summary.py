"""What a sweep leaves when it ends: the closing text on the console, and the same tables (plus
plots) as artifacts of its MLflow parent run. The tables themselves are ``compare``'s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..tracking import TrackingStore, resolve_uri, training_view_url
from .grid import SUMMARY_METRICS, SweepSpec


def _table_metrics(metric: str) -> list[str]:
    return [metric] + [m for m in SUMMARY_METRICS if m != metric]


def log_results(store: TrackingStore, spec: SweepSpec, parent_run_id: str,
                trials: list[dict[str, Any]], out_dir: Path) -> list[str]:
    """Tables (results + per-trial), runs.csv and plots onto the parent run, under
    ``results/``; a failure here is reported, never raised (the trials are done)."""
    from ..compare import log_sweep_results, trials_table

    try:
        table = trials_table(trials, list(spec.grid), _table_metrics(spec.metric))
        return log_sweep_results(store, spec.name, parent_run_id, spec.metric, table, out_dir)
    except Exception as err:  # noqa: BLE001 -- the runs are in MLflow; `recsec compare` redoes it
        print(f"[recsec] could not log the results tables to MLflow: {err}", flush=True)
        return []


def report(result: Any, metric: str = "t_hr@50") -> str:
    """The closing text: results tables, every trial's line, failures, and where MLflow has
    it all (and the link that opens its model-training view)."""
    from ..compare import format_tables, frame_from_rows, markdown, trials_table

    lines = []
    if result.rows:
        lines.append(format_tables(frame_from_rows(result.rows), metrics=_table_metrics(metric)))
    if result.trials:
        table = trials_table(result.trials, result.swept or [], _table_metrics(metric))
        lines += ["### every trial", markdown(table), ""]
    lines += [f"FAILED trial {err}" for err in result.errors]
    lines += [f"UNFINISHED trial {label}" for label in result.unfinished]
    lines.append(f"{len(result.rows)} trial(s) finished, {len(result.errors)} failed, "
                 f"{len(result.unfinished)} unfinished, wall {result.wall_s:.0f} s")
    if result.llm_stats:
        st = result.llm_stats
        lines.append(f"LLM service: model loads {st.get('model_loads')}, {st.get('calls')} calls, "
                     f"cache hit rate {st.get('cache_hit_rate', 0):.2f}, "
                     f"{st.get('cpu_s', 0):.0f} CPU s")
    uri = resolve_uri(result.tracking_uri)
    ui = uri if uri.startswith("http") else "http://127.0.0.1:5000"
    lines += [
        f"MLflow tracking URI: {uri}",
        f"MLflow experiment:   {result.experiment} (id {result.experiment_id})",
        f"MLflow parent run:   {result.parent_run_id}"
        + (f"  (artifacts: {', '.join(result.artifacts)})" if result.artifacts else ""),
        f"MLflow trials view:  {training_view_url(ui, result.experiment_id)}"
        + ("" if uri.startswith("http") else f"  (after `mlflow ui --backend-store-uri {uri}`)"),
        f"Tune storage:        {result.storage}  (resume: --resume {result.sweep_id})",
        (f"Compare:             recsec compare --experiment {result.experiment} "
         f"--mlflow-uri {uri}"),
    ]
    return "\n".join(lines)
