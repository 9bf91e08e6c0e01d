"""Comparison tables and plots from a sweep's MLflow runs; the notebook, executed."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest

from recsec_ray import cli
from recsec_ray.compare import (
    compare,
    format_tables,
    load_runs,
    log_sweep_results,
    markdown,
    table,
    trials_table,
)
from recsec_ray.errors import RecsecError
from recsec_ray.tracking import TrackingStore, trial_key

ROOT = Path(__file__).resolve().parents[1]
RATES, DEFENSES, SEEDS = (0.01, 0.05, 0.1), ("none", "lorec"), (0, 1, 2)


def _truth(rate: float, defense: str, seed: int) -> dict[str, float]:
    """Made-up but structured metrics: the attack grows with the rate, LoRec halves it."""
    t_hr = rate * (0.5 if defense == "lorec" else 1.0) + 0.001 * seed
    out = {"hr@10": 0.07 - 0.01 * seed, "t_hr@50": t_hr}
    if defense == "lorec":
        out["user_f1"] = 0.5 + rate
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep logged through the tracking store: 18 trials, one retried (FAILED first)."""
    tmp = tmp_path_factory.mktemp("cmp")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    store = TrackingStore(uri)
    exp = store.experiment("cmp")
    parent = store.start_sweep(exp, "cmp-1", run_name="cmp-1", params={}, tags={})
    for rate, defense, seed in itertools.product(RATES, DEFENSES, SEEDS):
        params = {"data.name": "ml-100k", "model.backbone": "sasrec", "attack.name": "bandwagon",
                  "attack.poison_rate": rate, "defense.name": defense, "seed": seed}
        key = trial_key(params)
        if (rate, defense, seed) == (0.1, "none", 0):  # a dead first attempt
            store.start_trial(exp, parent, key, run_name="x", params=params)
        start = store.start_trial(exp, parent, key, run_name="x", params=params)
        store.finish_trial(start.run_id, _truth(rate, defense, seed), {})
    store.finish_run(parent)
    return uri, parent, tmp


def test_load_runs_one_row_per_trial(sweep):
    uri, parent, _ = sweep
    df, found = load_runs("cmp", tracking_uri=uri)
    assert found == parent and len(df) == 18
    assert df["attack.poison_rate"].dtype.kind == "f" and df["seed"].dtype.kind == "i"
    assert {"hr@10", "t_hr@50", "user_f1"} <= set(df.columns)


def test_tables_mean_and_ci_over_seeds_and_paired_differences(sweep):
    uri, _, _ = sweep
    df, _ = load_runs("cmp", tracking_uri=uri)
    t = table(df, "t_hr@50")
    assert list(t.index) == ["lorec", "none"] and list(t.columns) == ["0.01", "0.05", "0.1"]
    vals = [_truth(0.05, "none", s)["t_hr@50"] for s in SEEDS]
    half = 4.302653 * np.std(vals, ddof=1) / np.sqrt(3)  # t(0.975, 2 dof) x standard error
    assert t.loc["none", "0.05"] == f"{np.mean(vals):.4f} ± {half:.4f}"
    # the seed term is shared by both arms: pairing cancels it, and the CI excludes zero
    # although the two arms' own CIs overlap
    diff = table(df, "t_hr@50", paired=True)
    assert list(diff.index) == ["lorec"]
    assert diff.loc["lorec", "0.01"] == "-0.0050 ± 0.0000 *"
    text = format_tables(df)
    assert "minus the matching `none` trial" in text and "| lorec | -0.0050 ± 0.0000 * | -0.0250 ± 0.0000 * |" in text
    assert "### t_hr@50" in text and "### hr@10" in text and "### user_f1" in text
    assert "asr@10" not in text  # not logged by this sweep: no empty table


def test_compare_writes_plots_and_logs_to_parent(sweep, capsys):
    """`recsec compare` itself (the CLI's parser and command), not a helper behind it."""
    uri, parent, tmp = sweep
    out = tmp / "out"
    assert cli.main(["compare", "--experiment", "cmp", "--metric", "t_hr@50", "--out", str(out),
                     "--mlflow-uri", uri]) == 0
    printed = capsys.readouterr().out
    assert "| none |" in printed and parent in printed
    pngs = sorted(out.glob("*.png"))
    assert [p.name.split("_vs_")[0] for p in pngs] == ["hr_10", "t_hr_50"]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    logged = TrackingStore(uri).client.list_artifacts(parent, "compare")
    assert {Path(a.path).name for a in logged} == {"tables.md", "runs.csv"} | \
        {p.name for p in pngs}


def test_unknown_experiment_or_metric_is_one_line(sweep, tmp_path, capsys):
    uri, _, _ = sweep
    with pytest.raises(RecsecError, match="no such MLflow experiment"):
        compare("nope", tracking_uri=uri, out=tmp_path)
    with pytest.raises(RecsecError, match="--metric 'asr@10': not logged"):
        compare("cmp", metric="asr@10", tracking_uri=uri, out=tmp_path)
    assert cli.main(["compare", "--experiment", "nope", "--mlflow-uri", uri,
                     "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recsec: error: --experiment 'nope'") and "\n" not in err


def test_sweep_results_on_the_parent_run(sweep, tmp_path):
    """What a sweep logs when it ends: the tables and plots of its finished runs (from MLflow),
    and the per-trial table with the failed trial's error line."""
    uri, parent, _ = sweep
    trials = [{"attack.poison_rate": 0.01, "defense.name": "none", "seed": 0,
               "status": "done", "hr@10": 0.07, "t_hr@50": 0.01, "trial_busy_s": 3.0},
              {"attack.poison_rate": 0.05, "defense.name": "none", "seed": 0,
               "status": "FAILED", "error": "ConfigError: attack.n_targets: 500 targets"}]
    keys = ["attack.poison_rate", "defense.name", "seed"]
    frame = trials_table(trials, keys)
    assert list(frame.columns) == [*keys, "status", "hr@10", "t_hr@50", "trial_busy_s",
                                   "error"]
    text = markdown(frame)
    assert "| 0.01 | none | 0 | done | 0.07 | 0.01 | 3 | – |" in text
    assert "| FAILED | – | – | – | ConfigError: attack.n_targets: 500 targets |" in text
    store = TrackingStore(uri)
    names = log_sweep_results(store, "cmp", parent, "t_hr@50", frame, tmp_path / "res")
    logged = {Path(a.path).name for a in store.client.list_artifacts(parent, "results")}
    assert {"trials.md", "trials.csv", "tables.md", "runs.csv"} <= logged
    assert {f"results/{n}" for n in logged} == set(names)
    assert sum(n.endswith(".png") for n in logged) == 2  # t_hr@50 and hr@10
    tables = (tmp_path / "res" / "tables.md").read_text()
    assert "### t_hr@50" in tables and "| lorec |" in tables


def test_notebook_runs(sweep, tmp_path, monkeypatch):
    import nbclient
    import nbformat

    uri, parent, _ = sweep
    nb = nbformat.read(ROOT / "notebooks" / "compare_results.ipynb", as_version=4)
    monkeypatch.setenv("RECSEC_EXPERIMENT", "cmp")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the kernel is this interpreter (the project's .venv), whatever kernels are registered
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH",
                                                                                 "")]))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                      for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert f"18 finished trials in sweep {parent}" in outputs
    assert "2 plot(s)" in outputs
    assert (tmp_path / "compare_out" / "cmp" / "tables.md").is_file()


def test_a_varying_defense_setting_splits_rows_and_pairs_with_none():
    """The LoRec control as ``--set defense.lorec_init_weight=100``: its own row, paired
    with the undefended trial of its seed."""
    from recsec_ray.compare import arms, frame_from_rows

    rows = []
    for seed in (0, 1, 2):
        rows.append({"defense.name": "none", "defense.lorec_init_weight": None, "seed": seed,
                     "attack.poison_rate": 0.05,
                     "t_hr@50": 0.10 + 0.05 * seed})
        for w, drop in ((3.0, 0.05), (100.0, 0.0)):
            rows.append({"defense.name": "lorec", "defense.lorec_init_weight": w, "seed": seed,
                         "attack.poison_rate": 0.05,
                         "t_hr@50": 0.10 + 0.05 * seed - drop})
    df = frame_from_rows(rows)
    assert set(arms(df)) == {"none", "lorec [lorec_init_weight=3.0]",
                             "lorec [lorec_init_weight=100.0]"}
    diff = table(df, "t_hr@50", paired=True)
    assert diff.iloc[:, 0].to_dict() == {"lorec [lorec_init_weight=100.0]": "0.0000 ± 0.0000",
                                         "lorec [lorec_init_weight=3.0]": "-0.0500 ± 0.0000 *"}
