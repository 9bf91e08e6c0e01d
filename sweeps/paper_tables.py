"""The figures of README's "What the offline defaults measure", regenerated over several seeds:
each a mean ± 95 % CI, every defense and dose also paired with its base trial (same seed,
targets and fake users). Each study is one or more sweeps in MLflow experiment ``paper-<study>``.

    .venv/bin/python sweeps/paper_tables.py                    # every study, ML-100K, SASRec
    .venv/bin/python sweeps/paper_tables.py --only dose,lorec --seeds 0,1,2,3,4
    .venv/bin/python sweeps/paper_tables.py --from-mlflow      # the tables again, nothing run

dose: undefended Random / Bandwagon / DP at 1, 5, 10 % against no attack. lorec: LoRec and its
control (weights held at 1), every arm selecting from the epoch LoRec starts reweighting.
llm4dec: the defender simulates Random. llm_fakes: LLM4Dec and LoRec against LLM-chosen fakes,
beside Random and Bandwagon. backdoor: BadRec's dose-response on the candidate lists (ASR@1,
asr_base@1, clean HR@1) for the LLM recommender and text SASRec beside each victim trained
without the attack, then P-Scanner and ONION against it at 1 % (disjoint trigger families).
"""

import sys

from recsec_ray.sweep.studies import Study, main_studies

BASE = {"data.name": "ml-100k", "model.backbone": "sasrec"}
DETECTION = ["t_hr@50", "hr@10", "user_auc", "user_f1"]
LEVELS = ["char", "word", "sentence"]
BACKDOOR = {"model.items": "text", "model.epochs": 20, "model.patience": 5}  # sweeps/backdoor.py
STUDIES = {
    "dose": Study([({"attack.name": ["none"], "defense.name": ["none"]}, {}),
                   ({"attack.name": ["random", "bandwagon", "dp"],
                     "attack.poison_rate": [0.01, 0.05, 0.1], "defense.name": ["none"]}, {})],
                  "dose", arms=["random", "bandwagon", "dp"]),
    "lorec": Study([({"attack.name": [a], "attack.poison_rate": [0.05],
                      "defense.name": ["none", "lorec", "lorec_control"]},
                     {"model.select_after": 2}) for a in ("bandwagon", "dp")],
                   "defense", values=["bandwagon", "dp"], arms=["lorec", "lorec_control"],
                   metrics=DETECTION),
    "llm4dec": Study([({"attack.name": ["bandwagon"], "attack.poison_rate": [0.05],
                        "defense.name": ["none", "llm4dec"]}, {})],
                     "defense", values=["bandwagon"], arms=["llm4dec"], metrics=DETECTION),
    "llm_fakes": Study([({"attack.name": ["random", "bandwagon", "llm"],
                          "attack.poison_rate": [0.05], "defense.name": ["llm4dec", "lorec"]},
                         {"model.select_after": 2})],
                       "detect", values=["llm4dec", "lorec"], arms=["random", "bandwagon", "llm"],
                       metrics=["user_auc", "user_f1", "t_hr@50", "attack_llm_chosen_share"]),
    "backdoor": Study([sweep for victim in ("llmrec", "sasrec") for sweep in (
        ({"attack.name": ["none"], "model.backbone": [victim], "defense.name": ["none"]},
         BACKDOOR),
        ({"model.backbone": [victim], "attack.trigger_level": LEVELS,
          "attack.badrec_fraction": [0.0, 0.005, 0.01, 0.02, 0.05], "defense.name": ["none"]},
         {**BACKDOOR, "attack.name": "badrec"}),
        ({"model.backbone": [victim], "attack.trigger_level": LEVELS,
          "defense.name": ["pscanner", "onion"]},
         {**BACKDOOR, "attack.name": "badrec", "attack.badrec_fraction": 0.01}))],
                      "backdoor", values=["llmrec", "sasrec"], arms=LEVELS,
                      metrics=["asr@1", "asr_base@1", "hr@1", "pop_hr@1"],
                      defense_metrics=["asr@1", "asr_base@1", "hr@1", "asr@10", "asr_base@10",
                                       "item_auc_scanner", "item_f1_scanner", "item_auc",
                                       "item_f1"]),
}

if __name__ == "__main__":
    sys.exit(main_studies(__doc__, STUDIES, BASE, prefix="paper"))
