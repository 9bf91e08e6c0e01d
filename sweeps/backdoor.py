"""Backdoor dose-response study (BadRec, DESIGN §4): how attack success grows with the share of
poisoned training examples, per trigger level and victim, and what P-Scanner and ONION leave
of it. Every victim is scored on the same seeded candidate lists (``recsec_ray.candidates``):
ASR@1 (the triggered wrong candidate is picked) beside asr_base@1 (the same candidate without
the trigger) and clean HR@1; text SASRec also reports full-ranking ASR@10/50 (an extension).

    .venv/bin/python sweeps/backdoor.py               # the study: 180 trials (a cluster's worth)
    .venv/bin/python sweeps/backdoor.py --backbone llmrec --defense none --seed 0
    .venv/bin/recsec compare --experiment backdoor --metric asr@1   # ASR@1 vs share, CI bands

Same flags as sweeps/poison_rate.py (``--<axis> v1,v2``, ``--set``, ``--resume``, ...). Trials
of one seed share the LLM service's cached lower-layer states and P-Scanner's trained scanner
(its input, the titles, does not depend on the share or the victim), so the first trial of a
(seed, level) pays for them and the rest reuse them.
"""

import sys

from recsec_ray.sweep import main

GRID = {
    "model.backbone": ["llmrec", "sasrec"],  # sasrec reads title embeddings (items=text)
    "attack.trigger_level": ["char", "word", "sentence"],
    "attack.badrec_fraction": [0.0, 0.005, 0.01, 0.02, 0.05],  # 0: the trigger, no poison
    "defense.name": ["none", "pscanner", "onion"],
    "seed": [0, 1],
}
FIXED = {"data.name": "ml-100k", "model.items": "text", "attack.name": "badrec",
         "model.epochs": 20, "model.patience": 5}

FULL = {**GRID, "seed": [0, 1, 2]}
FULL_FIXED = {**FIXED, "model.epochs": 200, "model.patience": 10}

SMOKE = {"attack.trigger_level": ["char"], "attack.badrec_fraction": [0.01],
         "defense.name": ["none"], "seed": [0]}
SMOKE_FIXED = {"data.name": "synthetic", "model.backbone": "sasrec", "model.items": "text",
               "attack.name": "badrec", "model.epochs": 2, "model.dim": 16, "model.heads": 1}


if __name__ == "__main__":
    sys.exit(main(__doc__, name="backdoor", grid=GRID, fixed=FIXED, full=FULL,
                  full_fixed=FULL_FIXED, smoke=SMOKE, smoke_fixed=SMOKE_FIXED,
                  metric="asr@1"))
