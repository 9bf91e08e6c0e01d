"""The command line every ``sweeps/*.py`` recipe shares (DESIGN §8), and the one ``main`` they
all call: a recipe only declares its grids."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ..config import parse_override
from ..errors import RecsecError
from .grid import AXES, SweepSpec

# Axes that stay table dimensions even with one value (a one-value axis is a setting).
_ALWAYS_AXES = ("attack.poison_rate", "attack.badrec_fraction", "defense.name", "seed")


def _split(typ: type) -> Callable[[str], list[Any]]:
    def parse(raw: str) -> list[Any]:
        try:
            return [typ(v.strip()) for v in raw.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r}: expected comma-separated "
                                             f"{typ.__name__} values") from None
    return parse


def sweep_parser(description: str | None) -> argparse.ArgumentParser:
    """Flags every sweep script shares (DESIGN §8): mode, where to run, where to log, axes."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="tiny synthetic sweep (tests)")
    mode.add_argument("--full", action="store_true", help="the papers' full study grid")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="SWEEP_ID",
                   help="continue an interrupted sweep (default: the latest of this name)")
    p.add_argument("--name", help="sweep / MLflow experiment name")
    p.add_argument("--ray-address", help="connect to this Ray cluster (default: local Ray)")
    p.add_argument("--mlflow-uri", help="tracking URI (default sqlite:///mlflow.db)")
    p.add_argument("--storage-path", default="sweep_results",
                   help="Tune results and resume state (local folder or s3://, gs://)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0)
    p.add_argument("--max-failures", type=int, default=2,
                   help="retries of a crashed trial (config and data errors get none)")
    p.add_argument("--max-concurrent", type=int, default=None)
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray: logical CPUs")
    p.add_argument("--num-gpus", type=int, default=None, help="local Ray: logical GPUs")
    p.add_argument("--dashboard", action="store_true", help="local Ray dashboard on 127.0.0.1")
    p.add_argument("--llm", choices=("auto", "on", "off"), default="auto",
                   help="start the shared LLM service (auto: when a trial needs it)")
    p.add_argument("--llm-gpus", type=float, default=None,
                   help="GPUs for the LLM actor (default: 1 where the cluster has a GPU)")
    p.add_argument("--llm-cpus", type=float, default=None,
                   help="CPUs reserved for the LLM actor (default: 1 on 8+ CPU clusters, else 0)")
    p.add_argument("--progress", action="store_true", help="tqdm bars inside each job")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                   help="0 quiet, 1 a line per trial event (default), 2 also Tune's tables")
    p.add_argument("--no-preflight", action="store_true",
                   help="skip the data/model/MLflow checks (a driver that cannot see the "
                        "cluster's data folder)")
    p.add_argument("--metric", default="t_hr@50", help="first column of the final tables")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fixed config override by dotted key, e.g. --set model.dim=32")
    for axis, (key, typ) in AXES.items():
        p.add_argument("--" + axis.replace("_", "-"), type=_split(typ), default=None,
                       metavar="V1,V2", help=f"sweep {key}")
    return p


def spec_from_args(args: argparse.Namespace, *, name: str, grid: dict[str, list[Any]],
                   fixed: dict[str, Any] | None = None,
                   full: dict[str, list[Any]] | None = None,
                   full_fixed: dict[str, Any] | None = None,
                   smoke: dict[str, list[Any]] | None = None,
                   smoke_fixed: dict[str, Any] | None = None) -> SweepSpec:
    """Grid and fixed values = the script's default (or its --full / --smoke ones), then the
    axis flags, then --set."""
    chosen = dict(full if args.full and full else smoke if args.smoke and smoke else grid)
    if args.smoke and smoke_fixed is not None:
        values = dict(smoke_fixed)
    elif args.full and full_fixed is not None:
        values = dict(full_fixed)
    else:
        values = dict(fixed or {})
    for axis, (key, _) in AXES.items():
        given = getattr(args, axis)
        if given is not None:
            values.pop(key, None)
            chosen[key] = given
    for item in args.set:
        key, value = parse_override(item)
        if key in chosen:
            chosen[key] = value if isinstance(value, list) else [value]
        else:
            values[key] = value
    for key in [k for k, v in chosen.items() if len(v) == 1 and k not in _ALWAYS_AXES]:
        values[key] = chosen.pop(key)[0]
    suffix = "-smoke" if args.smoke else "-full" if args.full else ""
    return SweepSpec(
        name=args.name or name + suffix, grid=chosen, fixed=values,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        max_failures=args.max_failures, max_concurrent=args.max_concurrent,
        storage_path=args.storage_path, mlflow_uri=args.mlflow_uri,
        ray_address=args.ray_address, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
        dashboard=args.dashboard, resume=args.resume, llm=args.llm, llm_gpus=args.llm_gpus,
        llm_cpus=args.llm_cpus, progress=args.progress,
        verbose=getattr(args, "verbose", 1), metric=args.metric,
        preflight=not getattr(args, "no_preflight", False))


def main_sweep(args: argparse.Namespace, **script: Any) -> int:
    """Run a sweep (``script``: ``spec_from_args``'s keywords), print the closing report.
    Exit codes: 0 all trials finished, 1 some failed or are unfinished, 2 the sweep could not
    start (one line on stderr: what is missing and where it goes)."""
    from .driver import run_sweep
    from .summary import report

    try:
        spec = spec_from_args(args, **script)
        result = run_sweep(spec)
    except RecsecError as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        return 2
    print(report(result, spec.metric), flush=True)
    return 1 if result.errors or result.unfinished else 0


def main(description: str | None, argv: list[str] | None = None, *, metric: str | None = None,
         **script: Any) -> int:
    """A recipe's whole ``main``: parse the shared flags, then :func:`main_sweep` with the
    recipe's grids (``name``, ``grid``, ``fixed``, ``full``, ``full_fixed``, ``smoke``,
    ``smoke_fixed``); ``metric``: the recipe's default ``--metric``."""
    parser = sweep_parser(description)
    if metric is not None:
        parser.set_defaults(metric=metric)
    return main_sweep(parser.parse_args(argv), **script)
