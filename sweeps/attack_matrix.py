"""Attack x defense matrix at one budget: which defense holds against which attack
(LLM4Dec and LoRec are trained against a *known* attack, Random by default, and meet the others
unseen).

    .venv/bin/python sweeps/attack_matrix.py          # ML-100K, SASRec, 5 % fake users
    .venv/bin/python sweeps/attack_matrix.py --full   # every injection attack x user defense,
                                                      # 3 backbones, 3 seeds (BadRec: backdoor.py)

Same flags as sweeps/poison_rate.py (``--<axis> v1,v2``, ``--set``, ``--resume``, ...).
"""

import sys

from recsec_ray.sweep import main

GRID = {
    "attack.name": ["random", "bandwagon"],
    "attack.poison_rate": [0.05],
    "defense.name": ["none", "detector", "lorec", "lorec_control"],
    "seed": [0],
}
# every arm selects its model from epoch 3 on, where LoRec's fast schedule starts reweighting
FIXED = {"data.name": "ml-100k", "model.backbone": "sasrec", "model.select_after": 2}

FULL = {
    "model.backbone": ["sasrec", "gru4rec", "bert4rec"],
    "attack.name": ["random", "bandwagon", "dp", "llm"],
    "attack.poison_rate": [0.05],
    "defense.name": ["none", "detector", "apr", "llm4dec", "lorec", "lorec_control"],
    "seed": [0, 1, 2],
}
FULL_FIXED = {"data.name": "ml-100k", "model.epochs": 200, "model.patience": 10,
              "model.select_after": 2}

SMOKE = {"attack.name": ["random", "bandwagon"], "attack.poison_rate": [0.1],
         "defense.name": ["none"], "seed": [0]}
SMOKE_FIXED = {"data.name": "synthetic", "model.backbone": "sasrec", "model.epochs": 2,
               "model.dim": 16, "model.heads": 1}


if __name__ == "__main__":
    sys.exit(main(__doc__, name="attack_matrix", grid=GRID, fixed=FIXED, full=FULL,
                  full_fixed=FULL_FIXED, smoke=SMOKE, smoke_fixed=SMOKE_FIXED))
