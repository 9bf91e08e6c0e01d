"""The README figures' script: every study's grid is a valid sweep, and its tables pair each
arm with the base trial of the same seed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from recsec_ray.sweep.grid import SweepSpec, expand

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("paper_tables", ROOT / "sweeps" / "paper_tables.py")
paper = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paper)


def test_every_study_expands_to_valid_trials():
    for study, sweeps in paper.STUDIES.items():
        for grid, fixed in sweeps:
            configs = expand(SweepSpec(name=study, grid={**grid, "seed": [0, 1, 2]},
                                       fixed={**paper.BASE, **fixed}))
            assert len(configs) >= 3, study
    lorec = [cfg for grid, fixed in paper.STUDIES["lorec"]
             for cfg in expand(SweepSpec(name="x", grid={**grid, "seed": [0]},
                                         fixed={**paper.BASE, **fixed}))]
    # every arm of the LoRec comparison selects its model from the same epoch
    assert {c.model.select_after for c in lorec} == {c.defense.lorec_start - 1 for c in lorec
                                                     if c.defense.name != "none"}


def test_tables_pair_arms_with_their_seed():
    rows = [{"attack.name": "bandwagon", "defense.name": d, "seed": s,
             "t_hr@50": base * (0.5 if d == "lorec" else 1.0), "hr@10": 0.17}
            for s, base in enumerate((0.02, 0.04, 0.06)) for d in ("none", "lorec")]
    text = paper.defense_tables(pd.DataFrame(rows), "attack.name", ["bandwagon"], ["lorec"],
                                ["t_hr@50", "hr@10"])
    line = next(ln for ln in text.splitlines() if ln.startswith("| name=bandwagon name=lorec"))
    # the arms' own CIs overlap; the per-seed ratio is exactly one half
    assert "| 0.50 ± 0.00 |" in line and "-0.020 ± 0.025" in line
