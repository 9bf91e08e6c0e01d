import json

import numpy as np
import pytest

from recsec_ray import cli, job, metrics
from recsec_ray.config import JobConfig
from recsec_ray.data.sequences import SequenceData
from recsec_ray.defenses.base import Sanitation

SMALL = {"data.name": "synthetic", "data.synthetic_users": 120, "data.synthetic_items": 60,
         "model.dim": 16, "model.heads": 1, "model.epochs": 3, "attack.name": "bandwagon",
         "attack.poison_rate": 0.1, "seed": 1}


def test_same_config_same_metrics_and_artifacts(tmp_path):
    cfg = JobConfig().replace(**SMALL)
    a = job.run(cfg, progress=False, artifacts_dir=tmp_path / "a")
    b = job.run(cfg, progress=False)
    timing = {k for k in a if k.startswith("time_")}
    assert {k: v for k, v in a.items() if k not in timing} == \
           {k: v for k, v in b.items() if k not in timing}
    assert a["n_fake_users"] == 12 and 0 <= a["hr@10"] <= 1 and "t_hr@50" in a
    assert {"config.yaml", "curves.json", "user_scores.parquet", "targets.parquet"} <= \
           {p.name for p in (tmp_path / "a").iterdir()}
    import pyarrow.parquet as pq

    per_target = pq.read_table(tmp_path / "a" / "targets.parquet").to_pandas()
    assert len(per_target) == a["n_targets"] and (per_target["eligible_users"] > 0).all()
    # the headline figure is the mean of the per-target ones (targets no user lacks skipped)
    assert per_target["t_hr@50"].mean() == pytest.approx(a["t_hr@50"])
    c = job.run(cfg.replace(seed=2), progress=False)
    assert c["hr@10"] != a["hr@10"] or c["t_hr@50"] != a["t_hr@50"]


def test_cli_run_prints_metrics_json_last(capsys, tmp_path):
    flags = ["--dataset", "synthetic", "--attack", "random", "--poison-rate", "0.05",
             "--epochs", "2", "--seed", "0", "--quiet", "--set", "model.dim=16",
             "--set", "model.heads=1", "--json", str(tmp_path / "m.json")]
    assert cli.main(["run", *flags]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    metrics = json.loads(last)
    assert metrics == json.loads((tmp_path / "m.json").read_text())
    assert {"hr@10", "ndcg@10", "t_hr@50", "t_ndcg@50", "time_train_s"} <= set(metrics)


def test_cli_bad_value_is_one_line_naming_the_field(capsys):
    assert cli.main(["run", "--attack", "sybil"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "attack.name: 'sybil' is not one of" in err


def test_sanitation_drops_removed_items_from_training_parts_only():
    data = SequenceData("t", [np.array([1, 2, 3, 2, 4]), np.array([3, 1, 2])],
                        ["", "a", "b", "c", "d"])
    san = Sanitation.keep_all(data)
    san.removed_items = np.array([False, False, True, False, False])
    san.removed_users = np.array([False, True])
    san.user_weights = np.array([0.5, 1.0], dtype=np.float32)
    out, weights = san.apply(data)
    assert out.seqs[0].tolist() == [1, 3, 2, 4]  # item 2 kept as the valid item
    assert out.seqs[1].tolist() == [3, 1, 2]
    assert weights.tolist() == [0.5, 0.0]  # a removed user trains at weight 0


def test_defense_is_blind_to_user_ids_and_eval_keeps_real_histories(monkeypatch):
    """Fake users' ids ("fake-3") would give them away; and items a defense removes from
    training stay in the histories evaluation masks, as in the undefended run."""
    seen, evaluated = {}, []

    def removes_item_1(ctx):
        seen["user_ids"] = list(ctx.data.user_ids)
        san = Sanitation.keep_all(ctx.data)
        san.removed_items = np.zeros(ctx.data.n_items + 1, dtype=bool)
        san.removed_items[1] = True
        return san

    real_metrics = metrics.ranking_metrics

    def spy(model, data, *args, **kw):
        evaluated.append(data)
        return real_metrics(model, data, *args, **kw)

    monkeypatch.setitem(job.DEFENSES, "none", removes_item_1)
    monkeypatch.setattr(metrics, "ranking_metrics", spy)
    cfg = JobConfig().replace(**{**SMALL, "model.epochs": 1})
    job.run(cfg, progress=False)
    assert seen["user_ids"] == []
    assert any(1 in s[:-2] for s in evaluated[0].seqs)  # item 1 still in real histories


@pytest.mark.slow
def test_ml100k_sasrec_beats_popularity_twice(monkeypatch):
    if not (__import__("os").environ.get("RECSEC_DATA_DIR")):
        pytest.skip("RECSEC_DATA_DIR not set")
    pop = job.run(JobConfig().replace(**{"model.backbone": "pop"}), progress=False)
    sas = job.run(JobConfig(), progress=False)
    assert sas["hr@10"] >= 2 * pop["hr@10"]
