"""The figures of README's "What the offline defaults measure", regenerated over several seeds:
each a mean ± 95 % CI, every defense and dose also paired with its base trial (same seed,
targets and fake users). Each study is one or more sweeps in MLflow experiment ``paper-<study>``.

    .venv/bin/python sweeps/paper_tables.py                    # every study, ML-100K, SASRec
    .venv/bin/python sweeps/paper_tables.py --only dose,lorec --seeds 0,1,2,3,4
    .venv/bin/python sweeps/paper_tables.py --from-mlflow      # the tables again, nothing run

dose: undefended Random / Bandwagon / DP at 1, 5, 10 % against no attack. lorec: LoRec and
its control (same calibrator and schedule, weights held at 1), every arm selecting from the
epoch LoRec starts reweighting. llm4dec: the defender simulates Random. pscanner: P-Scanner and
ONION against BadRec (1 % of training examples) on text SASRec, attacker's and defender's
trigger families disjoint.
"""

import sys

from recsec_ray.sweep.studies import Study, main_studies

BASE = {"data.name": "ml-100k", "model.backbone": "sasrec"}
DETECTION = ["t_hr@50", "hr@10", "user_auc", "user_f1"]
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
    "pscanner": Study([({"attack.trigger_level": ["char", "word", "sentence"],
                         "defense.name": ["none", "pscanner", "onion"]},
                        {"attack.name": "badrec", "model.items": "text"})],
                      "defense", group="attack.trigger_level",
                      values=["char", "word", "sentence"], arms=["pscanner", "onion"],
                      metrics=["asr@10", "asr_base@10", "hr@10", "item_auc_scanner",
                               "item_f1_scanner", "item_auc", "item_f1"]),
}

if __name__ == "__main__":
    sys.exit(main_studies(__doc__, STUDIES, BASE, prefix="paper"))
