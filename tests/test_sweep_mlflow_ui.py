"""The sweep's experiment as a person opens it: MLflow's model-training view with the swept
settings and headline metrics as columns, checked in a headless browser (issue 14 item 7).

MLflow 3.17 shows experiments in its GenAI view by default; which view it uses comes from its
GenAI/Model-training switch (URL parameter ``workflowType``) rather than the experiment's
``mlflow.experimentKind`` tag, so the link the sweep prints carries both that parameter and
the experiment's saved view.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from recsec_ray.tracking import TrackingStore, training_view_url, trial_key

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or \
    shutil.which("google-chrome")


def _page_text(url: str, profile: Path) -> str:
    """The rendered page's visible text (scripts run for up to 20 s of virtual time)."""
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", f"--user-data-dir={profile}",
         "--virtual-time-budget=20000", "--window-size=1600,1000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False)
    html = re.sub(r"<(style|script)\b.*?</\1>", " ", done.stdout, flags=re.DOTALL)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium on this machine")
def test_sweep_experiment_opens_in_the_training_view(mlflow_server, tmp_path):
    store = TrackingStore(mlflow_server)
    exp = store.experiment("ui-sweep")
    store.set_trials_view(exp, ["attack.poison_rate", "defense.name"])
    parent = store.start_sweep(exp, "ui-sweep-1", run_name="ui-sweep-1", params={}, tags={})
    for rate, defense in [(0.05, "none"), (0.1, "lorec")]:
        params = {"attack.poison_rate": rate, "defense.name": defense, "seed": 0}
        start = store.start_trial(exp, parent, trial_key(params),
                                  run_name=f"poison_rate={rate},defense={defense}",
                                  params=params)
        store.finish_trial(start.run_id, {"hr@10": 0.0712, "t_hr@50": rate / 2,
                                          "user_f1": 0.5}, {})
    store.finish_run(parent)

    text = _page_text(training_view_url(mlflow_server, exp), tmp_path / "profile")
    assert "ui-sweep" in text, text[:2000]
    # the runs table of the model-training view, not the GenAI overview (traces, tool calls)
    assert "Run Name" in text and "Model training" in text, text[:2000]
    assert "Tool calls" not in text and "Token Usage" not in text
    # the swept settings and headline metrics are columns, and every trial is a row
    for column in ("attack.poison_rate", "defense.name", "hr_at_10", "t_hr_at_50", "user_f1"):
        assert column in text, (column, text[:3000])
    for trial in ("poison_rate=0.05,defense=none", "poison_rate=0.1,defense=lorec"):
        assert trial in text, (trial, text[:3000])
