"""Ray Tune glue (DESIGN §7): a grid of jobs run as trials, tracked in MLflow.

``grid`` (what runs), ``preflight`` (what every trial needs, checked before Ray starts),
``driver`` (Ray, the MLflow writer and the shared LLM actor around Tune), ``trainable`` (one
trial: ``recsec_ray.job.run`` wrapped), ``progress`` (the live console view), ``summary`` (the
closing tables, also logged to MLflow), ``script`` (the command line of ``sweeps/*.py``),
``studies`` (several sweeps read together as figures: ``sweeps/paper_tables.py``).
Importing this package does not import Ray; ``run_sweep`` does.
"""

from .driver import SweepResult, find_resumable, pin_path_env, run_sweep
from .grid import AXES, SUMMARY_METRICS, SweepSpec, expand, trial_label
from .script import main, main_sweep, spec_from_args, sweep_parser
from .summary import report
from .trainable import TrialContext, trainable

__all__ = ["AXES", "SUMMARY_METRICS", "SweepResult", "SweepSpec", "TrialContext", "expand",
           "find_resumable", "main", "main_sweep", "pin_path_env", "report", "run_sweep",
           "spec_from_args", "sweep_parser", "trainable", "trial_label"]
