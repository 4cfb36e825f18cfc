"""The ``dropoutlab`` command: data, notebooks, report, docs, variants."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"-p expects key=value, got {pair!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def cmd_data(args: argparse.Namespace) -> int:
    from . import data

    for name in args.names:
        path = data.fetch(name)
        print(f"{name}: ready" + (f" in {path.relative_to(Path.cwd())}" if path and path.is_relative_to(Path.cwd())
                                  else ""))
    return 0


def cmd_run_notebook(args: argparse.Namespace) -> int:
    from .notebooks import run_notebook

    out = run_notebook(args.name, args.profile, _parse_overrides(args.param))
    print(f"executed {args.name} ({args.profile}) → {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .claims import write_report

    out = write_report()
    print(f"claims report: {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    from .claims import load_claims, render_summary

    print(render_summary(load_claims()), end="")
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    from ._io import atomic_write_text
    from .docs import variants_markdown
    from .paths import repo_root

    out = repo_root() / "docs" / "variants.md"
    atomic_write_text(out, variants_markdown())
    print(f"wrote {out.relative_to(repo_root())}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import subprocess

    from .paths import repo_root

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

    data = sub.add_parser("data", help="datasets")
    data_sub = data.add_subparsers(dest="action", required=True)
    fetch = data_sub.add_parser("fetch", help="download/verify datasets into data/raw")
    fetch.add_argument("names", nargs="+", metavar="NAME")
    fetch.set_defaults(func=cmd_data)

    run = sub.add_parser("run-notebook", help="execute a notebook with a params.yaml profile")
    run.add_argument("name")
    run.add_argument("--profile", default="quick", help="smoke | quick | paper (default: quick)")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="override one notebook parameter (YAML value); repeatable")
    run.set_defaults(func=cmd_run_notebook)

    sub.add_parser("report", help="gather reports/metrics/*.json into reports/claims.md").set_defaults(func=cmd_report)
    sub.add_parser("claims", help="print every claim's verdict from reports/metrics/*.json").set_defaults(
        func=cmd_claims)
    sub.add_parser("docs", help="regenerate docs/variants.md from the registry").set_defaults(func=cmd_docs)
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
