"""What the sweep says while it runs: one line per trial event and a heartbeat, never Tune's
20-row status table every 30 s (the full tables come once, at the end: ``report``).

The callback also keeps MLflow honest (a dead attempt's run is marked FAILED before Tune
starts its retry) and stops Tune from retrying an error that cannot heal (see
``trainable.py``). Tune pickles callbacks with the experiment and restores them on resume,
so the callback holds only the sweep id and finds the live driver state in ``DRIVER_STATE``.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ray.tune import Callback

from ..envvars import setenv
from ..tracking import TrialTracker, trial_key
from .grid import SUMMARY_METRICS, job_config, label_of
from .trainable import CANNOT_HEAL, TrialContext

HEARTBEAT_S = 30.0


@dataclass
class DriverState:
    ctx: TrialContext
    n_trials: int
    started: float = field(default_factory=time.time)
    finished_here: int = 0  # trials finished (or given up) in this run of the driver
    stopped: dict[str, int] = field(default_factory=dict)  # trial id -> its max_failures


DRIVER_STATE: dict[str, DriverState] = {}


@contextlib.contextmanager
def quiet_tune(quiet: bool) -> Iterator[None]:
    """Below verbose 2, Tune prints nothing itself: no setup box, no status table (its legacy
    reporter at verbosity 0), no whole traceback per failed attempt; the sweep's own line per
    event names the error and the file that keeps the traceback."""
    want = {"TUNE_PRINT_ALL_TRIAL_ERRORS": "0", "RAY_AIR_NEW_OUTPUT": "0"} if quiet else {}
    with setenv(want):
        yield


def headline(error: str) -> str:
    """The last line of a (Ray-wrapped) traceback: ``SomeError: what went wrong``."""
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "unknown error")[:500]


def last_error(trial: Any) -> str:
    """The headline of the trial's latest failure: its own report, else Tune's error file."""
    said = (trial.last_result or {}).get(CANNOT_HEAL)
    if said:
        return str(said)
    text = trial.get_error() or ""
    block = text.rsplit("Failure # ", 1)[-1].splitlines()[1:]
    heads = [ln for ln in block if ln and not ln.startswith((" ", "Traceback"))]
    return (heads[-1] if heads else "unknown error")[:500]


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def metrics_text(result: dict[str, Any]) -> str:
    return "  ".join(f"{m}={result[m]:.4f}" for m in SUMMARY_METRICS
                     if isinstance(result.get(m), (int, float)))


class SweepCallback(Callback):
    """The live view: ``[recsec] 3/6 done, 2 running, 1 failed, ETA 4m10s | <event>``."""

    def __init__(self, sweep_id: str, verbose: int = 1) -> None:
        self.sweep_id = sweep_id
        self.verbose = verbose
        self._last_line = 0.0
        self._last_done = ""  # the latest finished trial and its headline metrics

    @property
    def state(self) -> DriverState:
        return DRIVER_STATE[self.sweep_id]

    def _status(self, trials: list[Any], ending: Any = None, becomes: str = "") -> str:
        """Counts over ``trials``; ``ending`` is counted as ``becomes`` (Tune calls the
        complete/error hooks before it changes the trial's status)."""
        st = self.state
        now = [becomes if t is ending else t.status for t in trials]
        count = {s: now.count(s) for s in ("TERMINATED", "ERROR", "RUNNING")}
        left = st.n_trials - count["TERMINATED"] - count["ERROR"]
        elapsed = time.time() - st.started
        eta = "–" if not st.finished_here or not left else \
            _duration(left * elapsed / st.finished_here)
        return (f"{count['TERMINATED']}/{st.n_trials} done, {count['RUNNING']} running, "
                f"{count['ERROR']} failed, {_duration(elapsed)} elapsed, ETA {eta}")

    def _say(self, trials: list[Any], event: str = "", ending: Any = None,
             becomes: str = "") -> None:
        self._last_line = time.time()
        if self.verbose:
            status = self._status(trials, ending, becomes)
            print(f"[recsec] {status}{' | ' + event if event else ''}", flush=True)

    def _mark_failed(self, trial: Any, what: str) -> None:
        ctx = self.state.ctx
        try:
            key = trial_key(job_config(trial.config).flat())
            TrialTracker(ctx.uri, ctx.writer).call(
                "fail_trial", ctx.experiment_id, ctx.parent_run_id, key,
                f"{what}: {last_error(trial)}")
        except Exception as err:  # noqa: BLE001 -- tracking trouble must not stop the sweep
            print(f"[recsec] could not mark the failed attempt in MLflow: {err}",
                  file=sys.stderr)

    # ---- Tune's hooks ---------------------------------------------------------------------
    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._last_line:  # the first step: the clock starts, nothing to say yet
            self._last_line = time.time()
        elif time.time() - self._last_line >= HEARTBEAT_S:
            self._say(trials, f"last done: {self._last_done}" if self._last_done else "")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(trials, f"started {label_of(trial.config)}", trial, "RUNNING")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if CANNOT_HEAL in result and trial.trial_id not in self.state.stopped:
            # no retry: Tune retries while num_failures <= max_failures, and the trial raises
            # only after this result is processed; the limit is put back once it has failed
            self.state.stopped[trial.trial_id] = trial.max_failures
            trial.max_failures = 0

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(trials, f"RETRY {label_of(trial.config)} after failure "
                          f"{trial.num_failures}: {last_error(trial)}")
        self._mark_failed(trial, "attempt failed; Tune retries it")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.state.finished_here += 1
        limit = self.state.stopped.pop(trial.trial_id, None)
        if limit is not None:
            trial.max_failures = limit
            why = "not retried: this error repeats on every attempt"
        else:
            why = f"gave up after {trial.num_failures} failure(s)"
        where = getattr(trial, "error_file", None)
        self._say(trials, f"FAILED {label_of(trial.config)} ({why}): {last_error(trial)}"
                          + (f" (traceback: {where})" if where else ""), trial, "ERROR")
        self._mark_failed(trial, "attempt failed; no retries left")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.state.finished_here += 1
        r = trial.last_result or {}
        busy = r.get("trial_busy_s")
        took = f" in {busy:.0f} s" if isinstance(busy, (int, float)) else ""
        extra = " (already in MLflow)" if r.get("reused_run") else ""
        self._last_done = f"{label_of(trial.config)}  {metrics_text(r)}"
        self._say(trials, f"done {label_of(trial.config)}{took}{extra}  {metrics_text(r)}",
                  trial, "TERMINATED")
