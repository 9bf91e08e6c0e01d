"""The ``recsec`` command (DESIGN §8): data stats, one job, comparison of a sweep's runs."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from .errors import RecsecError

# Command-line flag -> dotted config key. Flags left unset keep the config file's/default value.
RUN_FLAGS: dict[str, tuple[str, type]] = {
    "dataset": ("data.name", str),
    "data_dir": ("data.data_dir", str),
    "tie_rule": ("data.tie_rule", str),
    "backbone": ("model.backbone", str),
    "items": ("model.items", str),
    "epochs": ("model.epochs", int),
    "device": ("model.device", str),
    "attack": ("attack.name", str),
    "poison_rate": ("attack.poison_rate", float),
    "n_targets": ("attack.n_targets", int),
    "trigger_level": ("attack.trigger_level", str),
    "defense": ("defense.name", str),
    "llm_backend": ("llm.backend", str),
    "llm_model": ("llm.model", str),
    "seed": ("seed", int),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recsec", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    stats = data_sub.add_parser("stats", help="users, items, interactions, lengths")
    stats.add_argument("name")
    stats.add_argument("--data-dir")
    stats.add_argument("--category", help="Amazon category, e.g. Beauty")

    run = sub.add_parser("run", help="one poison-defend-train-evaluate job")
    for flag, (_, typ) in RUN_FLAGS.items():
        run.add_argument("--" + flag.replace("_", "-"), type=typ, default=None)
    run.add_argument("--config", help="YAML job config; flags override it")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="any config field by dotted key, e.g. --set model.dim=128")
    run.add_argument("--json", help="also write the metrics to this file")
    run.add_argument("--quiet", action="store_true", help="no progress bars")

    cmp = sub.add_parser("compare", help="tables and plots from a sweep's MLflow runs")
    cmp.add_argument("--experiment", required=True)
    cmp.add_argument("--metric", default="t_hr@50")
    cmp.add_argument("--out", default="compare_out")
    cmp.add_argument("--mlflow-uri", default=None)
    cmp.add_argument("--parent", default=None, help="sweep parent run id (default: the latest)")
    return p


def build_config(args: argparse.Namespace):
    from .config import JobConfig, parse_override

    cfg = JobConfig.from_yaml(args.config) if args.config else JobConfig()
    overrides: dict[str, Any] = {}
    for flag, (key, _) in RUN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    for item in args.set:
        key, value = parse_override(item)
        overrides[key] = value
    return cfg.replace(**overrides) if overrides else cfg


def _cmd_run(args: argparse.Namespace) -> None:
    from . import job

    cfg = build_config(args)
    metrics = job.run(cfg, progress=not args.quiet)
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else round(v, 6))
             for k, v in sorted(metrics.items())}
    line = json.dumps(clean)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(line + "\n")
    print(line)


def _cmd_stats(args: argparse.Namespace) -> None:
    from .config import DataConfig
    from .data import dataset_stats, load_dataset

    cfg = DataConfig(name=args.name, data_dir=args.data_dir, category=args.category)
    stats = dataset_stats(load_dataset(cfg, progress=True))
    width = max(len(k) for k in stats)
    for k, v in stats.items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")


def _cmd_compare(args: argparse.Namespace) -> None:
    from .compare import compare
    from .tracking import resolve_uri

    result = compare(args.experiment, metric=args.metric, out=args.out,
                     tracking_uri=args.mlflow_uri, parent_run_id=args.parent)
    print(result.text)
    print(f"{len(result.frame)} trial run(s) of sweep {result.parent_run_id} in "
          f"{resolve_uri(args.mlflow_uri)}")
    for path in result.files:
        print(f"wrote {path}")
    print(f"logged to MLflow run {result.parent_run_id} under artifacts/compare/")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            _cmd_run(args)
        elif args.command == "data":
            _cmd_stats(args)
        else:
            _cmd_compare(args)
    except RecsecError as err:
        print(f"recsec: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
