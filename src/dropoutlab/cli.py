"""The ``dropoutlab`` command: data, notebooks, the pipeline, the claims report, docs, benchmarks.

The modules a subcommand needs beyond the notebook runner are imported when it runs, so that
``dropoutlab run-notebook`` refuses a bad ``-p`` value within seconds, before loading the rest.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from .notebooks import forecast_path, format_forecast, load_params, run_notebook
from .paths import PROFILES, repo_root


def _rel(path: Path) -> str:
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"-p expects KEY=VALUE (a YAML value, e.g. epochs=20 or 'seeds=[0,1,2]'), got {pair!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(f"-p {key.strip()}: {value!r} is not a YAML value ({err})") from None
    return overrides


def cmd_data(args: argparse.Namespace) -> int:
    from . import corpus, data

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in args.names:
        path = corpus.fetch_corpus(name) if name in corpus.list_corpora() else data.fetch(name)
        print(f"{name}: ready in {_rel(path)}")
    return 0


def cmd_run_notebook(args: argparse.Namespace) -> int:
    out = run_notebook(args.name, args.profile, _parse_overrides(args.param), part=args.part, dry_run=args.dry_run,
                       forecast=args.forecast)
    kind = ", dry run" if args.dry_run else ", forecast" if args.forecast is not None else ""
    print(f"executed {args.name} ({args.profile}{kind}) → {_rel(out)}")
    if args.forecast is not None:
        from . import pipeline  # loaded here, as in cmd_pipeline: the report stage does not depend on it

        root = repo_root()
        path = forecast_path(args.name, args.profile, root / "forecast")
        parts = len(pipeline.notebook_parts(args.name, args.profile, load_params(root))) or 1
        print(format_forecast(json.loads(path.read_text(encoding="utf-8")), parts))
        print(f"forecast written to {_rel(path)}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    # Loaded by name: the pipeline's report stage depends on the modules this file imports (pipeline.py reads
    # the import statements), and the report does not use the sweep — an edit to sweep.py re-runs no stage.
    sweep = importlib.import_module("dropoutlab.sweep")

    grid = sweep.parse_grid(args.param)
    seeds = sweep.parse_seeds(args.seeds)
    jobs = sweep.plan(args.name, args.profile, grid, seeds, name=args.sweep_name,
                      out=Path(args.out) if args.out else None)
    if args.engine == "dvc-queue":
        queued = sweep.queue_dvc(jobs)
        print(f"queued {len(queued)} DVC experiment(s): {', '.join(queued)}\n"
              "run them with `dvc queue start -j N`, follow with `dvc queue status`, compare with `dvc exp show`")
        return 0
    print(f"sweep {jobs[0].folder.parent.name}: {len(jobs)} job(s), engine {args.engine}"
          + (f" ({args.cluster})" if args.engine == "submitit" else ""))
    result = sweep.run_sweep(jobs, args.engine, args.cluster, sweep.load_config(args.config))
    table = sweep.write_summary(jobs)
    print(f"{len(result.ran)} ran, {len(result.skipped)} finished earlier, {len(result.failed)} failed; "
          f"results in {_rel(result.root)}/<job>/reports/{args.profile}/, summary {_rel(table)}")
    return 1 if result.failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from . import readme, report
    from .claims import default_registry

    root = repo_root()
    out = report.write_report(root)
    readme.update(root, report.load_records(root), default_registry())
    print(f"claims report: {_rel(out)} and {_rel(out.with_name('index.html'))}; README's generated blocks updated")
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    from . import report, verdicts
    from .claims import default_registry

    root, registry = repo_root(), default_registry()
    if args.simulate:
        print(verdicts.format_simulation(verdicts.simulate(registry, draws=args.draws, seed=0)))
        return 0
    records = report.load_records(root)
    if args.profile:
        records = [r for r in records if r["profile"] == args.profile]
    if args.diff:
        old = [r for r in report.load_records_at(args.diff, root) if not args.profile or r["profile"] == args.profile]
        print(report.render_diff(report.diff_records(old, records)))
    elif args.json:
        print(report.records_json(records, registry))
    else:
        print(report.render_summary(records, registry), end="")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from . import pipeline

    root = repo_root()
    if args.check:
        current = (root / "dvc.yaml").read_text() if (root / "dvc.yaml").is_file() else ""
        if current != pipeline.render(root):
            print("dvc.yaml is stale: run `make pipeline`", file=sys.stderr)
            return 1
        print("dvc.yaml is up to date")
        return 0
    print(f"wrote {_rel(pipeline.write(root))}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from . import pipeline, report
    from .claims import default_registry

    root = repo_root()
    outcome = pipeline.reproduce(args.profile, force=args.force, root=root)
    registry = default_registry()
    records = [r for r in report.load_records(root) if r["profile"] == args.profile]
    print()
    print(report.render_summary(records, registry), end="")
    print("\nClaims report: reports/claims.md (browse: reports/index.html). Compared with the committed record "
          "(git HEAD) — see the README, 'Reading the comparison':")
    try:
        old = [r for r in report.load_records_at("HEAD", root) if r["profile"] == args.profile]
        print(report.render_diff(report.diff_records(old, records)))
    except (ValueError, RuntimeError) as err:
        print(f"  no committed record to compare with ({err})")
    if outcome["skipped"]:
        print(f"{len(outcome['skipped'])} stage(s) skipped for missing data: {', '.join(outcome['skipped'])}")
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    from ._io import atomic_write_text
    from .docs import comparison_markdown, variants_markdown

    for name, text in (("variants.md", variants_markdown()), ("comparison.md", comparison_markdown(repo_root()))):
        out = repo_root() / "docs" / name
        atomic_write_text(out, text)
        print(f"wrote {out.relative_to(repo_root())}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    scripts = sorted((repo_root() / "benchmarks").glob("bench_*.py"))
    names = {p.stem.removeprefix("bench_"): p for p in scripts}
    unknown = sorted(set(args.names) - set(names))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; available: {', '.join(names) or '(none)'}")
    for name in args.names or names:
        print(f"== {name}", flush=True)
        subprocess.run([sys.executable, str(names[name])], check=True)
    return 0


def cmd_variants(args: argparse.Namespace) -> int:
    from .variants import list_dropouts

    for info in list_dropouts():
        print(f"{info.name:20s} {info.kind:10s} {info.family:22s} {info.paper}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dropoutlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    data_parser = sub.add_parser("data", help="datasets")
    data_sub = data_parser.add_subparsers(dest="action", required=True)
    fetch = data_sub.add_parser("fetch", help="obtain and verify datasets into data/raw")
    fetch.add_argument("names", nargs="+", metavar="NAME")
    fetch.set_defaults(func=cmd_data)

    run = sub.add_parser("run-notebook", help="execute a notebook with a params.yaml profile")
    run.add_argument("name")
    run.add_argument("--profile", default="quick", choices=PROFILES, help="default: quick")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="override one notebook parameter (a YAML value, e.g. epochs=20, 'seeds=[0,1,2]'); repeatable")
    run.add_argument("--part", default=None, metavar="NAME",
                     help="full/paper profiles: a training stage's part (e.g. seed-3 with -p 'seeds=[3]'): its "
                          "runs, executed notebook, figures and metrics go to runs/<profile>/<name>/<part>/")
    run.add_argument("--dry-run", action="store_true",
                     help="the profile's models, data, optimisers and loops, two updates per training run on a data "
                          "slice (params.yaml dry_run): a configuration check in seconds; outputs in dry-run/")
    run.add_argument("--forecast", nargs="?", type=int, const=20, default=None, metavar="STEPS",
                     help="a time forecast on this machine: the profile's real data and analysis, each training loop "
                          "stopped after STEPS timed updates (default 20); prints what the profile would take; outputs "
                          "in forecast/")
    run.set_defaults(func=cmd_run_notebook)

    sweep = sub.add_parser("sweep", help="run a notebook once per (parameters, seed): locally, on Slurm (submitit) "
                                         "or on DVC's experiment queue")
    sweep.add_argument("name", metavar="NOTEBOOK")
    sweep.add_argument("--profile", default="quick", choices=PROFILES, help="default: quick")
    sweep.add_argument("-p", "--param", action="append", default=[], metavar="KEY=V1,V2",
                       help="a parameter's values, comma-separated YAML values (lr=0.001,0.01; widths=[32,32],[64]); "
                            "repeatable: every combination is a job")
    sweep.add_argument("--seeds", metavar="LIST", help="one job per seed (seeds=[s]): 0,1,2 or 0-4")
    sweep.add_argument("--engine", default="local", choices=("local", "submitit", "dvc-queue"),
                       help="local: one after another here; submitit: one job each on Slurm (or submitit's "
                            "local/debug executor, --cluster); dvc-queue: one queued DVC experiment each")
    sweep.add_argument("--cluster", default="auto", choices=("auto", "slurm", "local", "debug"),
                       help="submitit's executor (default auto: Slurm where its commands are found, else local)")
    sweep.add_argument("--config", metavar="FILE", help="YAML of submitit executor parameters "
                                                        "(timeout_min, slurm_partition, cpus_per_task, ...)")
    sweep.add_argument("--sweep-name", metavar="NAME", help="default NOTEBOOK-PROFILE; results in sweeps/NAME/<job>/")
    sweep.add_argument("--out", metavar="DIR", help="folder of sweeps (default: sweeps/ in the repository)")
    sweep.set_defaults(func=cmd_sweep)

    repro = sub.add_parser("reproduce", help="run the pipeline for one profile, then the verdicts and the comparison "
                                             "with the committed record (what `make reproduce` does)")
    repro.add_argument("--profile", default="quick", choices=PROFILES)
    repro.add_argument("--force", action="store_true", help="re-run every notebook stage, changed or not")
    repro.set_defaults(func=cmd_reproduce)

    sub.add_parser("report", help="write reports/claims.md and reports/index.html").set_defaults(func=cmd_report)
    claims = sub.add_parser("claims", help="every claim's verdict, one line each (or --json, --diff, --simulate)")
    claims.add_argument("--profile", choices=PROFILES)
    claims.add_argument("--json", action="store_true", help="every verdict as a JSON list")
    claims.add_argument("--diff", metavar="REV", help="compare with the record committed at git revision REV")
    claims.add_argument("--simulate", action="store_true",
                        help="rate of 'reproduced' per rule kind under no effect (null) and under the registered effect")
    claims.add_argument("--draws", type=int, default=2000, help="simulated data sets per claim (--simulate)")
    claims.set_defaults(func=cmd_claims)

    pipe = sub.add_parser("pipeline", help="generate dvc.yaml from params.yaml, claims.yaml and the notebooks")
    pipe.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml is stale")
    pipe.set_defaults(func=cmd_pipeline)
    sub.add_parser("docs", help="regenerate docs/variants.md (the registry) and docs/comparison.md (notebook 14's family table)").set_defaults(func=cmd_docs)
    sub.add_parser("variants", help="list the registered dropout variants").set_defaults(func=cmd_variants)
    bench = sub.add_parser("bench", help="run the speed benchmarks in benchmarks/ (all, or by name)")
    bench.add_argument("names", nargs="*", metavar="NAME", help="e.g. train, variants, inference")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"dropoutlab {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
