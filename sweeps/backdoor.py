"""Backdoor study: BadRec (triggers appended to target titles) against P-Scanner, per trigger
level. Victims read titles (text items), so every trial uses the shared LLM service; the
table is defense x trigger level (x budget, when --badrec-fraction sweeps it), for ASR@10
(attack), HR@10 (clean) and item F1 (scanner).

    .venv/bin/python sweeps/backdoor.py               # ML-100K, SASRec on title embeddings
    .venv/bin/python sweeps/backdoor.py --full        # + the LLM recommender, ONION, 3 seeds
    .venv/bin/python sweeps/backdoor.py --badrec-fraction 0.01,0.05   # the budget axis

Same flags as sweeps/poison_rate.py (``--<axis> v1,v2``, ``--set``, ``--resume``, ...).
"""

import sys

from recsec_ray.sweep import main

# BadRec's budget is attack.badrec_fraction (fake interactions / real ones); poison_rate,
# the fake-user count of the injection attacks, does not apply to it.
GRID = {
    "attack.trigger_level": ["char", "word", "sentence"],
    "attack.badrec_fraction": [0.01],
    "defense.name": ["none", "pscanner"],
    "seed": [0],
}
FIXED = {"data.name": "ml-100k", "model.backbone": "sasrec", "model.items": "text",
         "attack.name": "badrec", "model.epochs": 20, "model.patience": 5,
         "defense.pscanner_rounds": 1}

FULL = {
    "model.backbone": ["sasrec", "llmrec"],
    "attack.trigger_level": ["char", "word", "sentence"],
    "attack.badrec_fraction": [0.01],
    "defense.name": ["none", "onion", "pscanner"],
    "seed": [0, 1, 2],
}
FULL_FIXED = {"data.name": "ml-100k", "model.items": "text", "attack.name": "badrec",
              "model.epochs": 200, "model.patience": 10}

SMOKE = {"attack.trigger_level": ["char"], "attack.badrec_fraction": [0.01],
         "defense.name": ["none"], "seed": [0]}
SMOKE_FIXED = {"data.name": "synthetic", "model.backbone": "sasrec", "model.items": "text",
               "attack.name": "badrec", "model.epochs": 2, "model.dim": 16, "model.heads": 1}


if __name__ == "__main__":
    sys.exit(main(__doc__, name="backdoor", grid=GRID, fixed=FIXED, full=FULL,
                  full_fixed=FULL_FIXED, smoke=SMOKE, smoke_fixed=SMOKE_FIXED))
