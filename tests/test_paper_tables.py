"""The README figures' studies: every study's grid is a valid sweep, and its tables pair each
arm with the base trial of the same seed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from recsec_ray.sweep.grid import SweepSpec, expand
from recsec_ray.sweep.studies import Study, defense_table, dose_table

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("paper_tables", ROOT / "sweeps" / "paper_tables.py")
paper = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paper)


def _configs(study: Study, seeds=(0,)):
    return [cfg for grid, fixed in study.sweeps
            for cfg in expand(SweepSpec(name="x", grid={**grid, "seed": list(seeds)},
                                        fixed={**paper.BASE, **fixed}))]


def test_every_study_expands_to_valid_trials():
    for name, study in paper.STUDIES.items():
        assert len(_configs(study, (0, 1, 2))) >= 3, name
    lorec = _configs(paper.STUDIES["lorec"])
    # every arm of the LoRec comparison selects its model from the epoch LoRec starts at
    assert {c.model.select_after for c in lorec} == {c.defense.lorec_start - 1 for c in lorec
                                                     if c.defense.name != "none"}


def test_tables_pair_arms_with_their_seed():
    rows = [{"attack.name": "bandwagon", "defense.name": d, "seed": s,
             "t_hr@50": base * (0.5 if d == "lorec" else 1.0), "hr@10": 0.17}
            for s, base in enumerate((0.02, 0.04, 0.06)) for d in ("none", "lorec")]
    study = Study([], "defense", values=["bandwagon"], arms=["lorec"])
    text = defense_table(pd.DataFrame(rows), study)
    line = next(ln for ln in text.splitlines()
                if ln.startswith("| attack=bandwagon defense=lorec"))
    # the arms' own CIs overlap; the per-seed ratio is exactly one half
    assert "| 0.50 ± 0.00 |" in line and "-0.020 ± 0.025" in line


def test_dose_steps_are_paired_by_seed():
    rows = [{"attack.name": "none", "attack.poison_rate": 0.05, "seed": s, "t_hr@50": 0.01,
             "hr@10": 0.17} for s in range(3)]
    rows += [{"attack.name": "random", "attack.poison_rate": r, "seed": s,
              "t_hr@50": 0.01 * s + r, "hr@10": 0.17} for s in range(3) for r in (0.01, 0.05)]
    text = dose_table(pd.DataFrame(rows), Study([], "dose", arms=["random"]))
    assert "0.01 → 0.05: 0.0400 ± 0.0000 *" in text  # the seed term cancels


def test_backdoor_rows_pair_each_share_with_the_clean_model_of_its_seed():
    from recsec_ray.sweep.studies import backdoor_table

    rows = [{"attack.name": "none", "model.backbone": "llmrec", "attack.trigger_level": "char",
             "attack.badrec_fraction": 0.01, "seed": s, "asr@1": 0.1 + 0.01 * s,
             "hr@1": 0.30 + 0.01 * s} for s in range(2)]
    rows += [{"attack.name": "badrec", "model.backbone": "llmrec", "attack.trigger_level": lvl,
              "attack.badrec_fraction": f, "seed": s, "asr@1": 0.1 + 0.01 * s + 10 * f,
              "hr@1": 0.30 + 0.01 * s} for lvl in ("char", "word") for f in (0.01, 0.05)
             for s in range(2)]
    rows = [{**r, "defense.name": "none"} for r in rows]
    rows += [{**r, "defense.name": "pscanner", "asr@1": r["asr@1"] / 10} for r in rows
             if r["attack.name"] == "badrec" and r["attack.badrec_fraction"] == 0.05]
    text = backdoor_table(pd.DataFrame(rows), Study([], "backdoor", values=["llmrec"],
                                                    arms=["char", "word"],
                                                    metrics=["asr@1", "hr@1"]))
    assert text.count("**llmrec,") == 4 and text.count(": defenses**") == 2
    defended = next(ln for ln in text.splitlines() if "defense=pscanner" in ln)
    assert "0.10 ± " in defended  # a tenth of the undefended ASR, seed by seed
    line = next(ln for ln in text.splitlines() if "trigger_level=word" in ln
                and "badrec_fraction=0.05" in ln and "attack=badrec" in ln)
    assert "0.500 ± 0.000 *" in line  # the seed term cancels: +10 x 0.05 over the clean model
    assert "1.00 ± 0.00" in line  # clean HR@1 unchanged
