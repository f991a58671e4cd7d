"""Run the benchmark suite: ``python bench/run.py [--quick] [--only 0,3] [--rounds N]``.

Each scenario measures the systems it compares in the same run, alternating them and
repeating (``--rounds``, at least 3 for a full run), and prints a markdown table with the
median and the range over rounds; ``bench/results/<time>.json`` keeps everything.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import context
import images
import report

SCENARIOS = {
    0: "s0_engines",
    1: "s1_efficiency",
    2: "s2_thumbor",
    3: "s3_queue",
    4: "s4_latency",
    5: "s5_memory",
    6: "s6_scaling",
    7: "s7_cluster",
    8: "s8_http_servers",
}

PEERS_NEEDED = {
    0: ["engines"],
    2: ["thumbor"],
    3: ["dramatiq", "saq", "arq", "celery", "rq"],
    5: ["engines"],
}


def prepare(ctx: context.Context, chosen: list[int]) -> list[str]:
    """Install the peers the chosen scenarios need while the test images are generated;
    returns the peers that could not be installed."""
    names = sorted({name for number in chosen for name in PEERS_NEEDED.get(number, [])})
    began = time.monotonic()
    print(f"Preparing: peer environments {names or 'none'} and test images ...", flush=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        installing = pool.submit(ctx.install_peers, names)
        for make in images.ALL:
            make()
        missing = []
        for name, found in installing.result().items():
            if not isinstance(found, Path):
                print(f"  {name}: not installed ({found}); see {ctx.log}", flush=True)
                missing.append(name)
    print(f"Prepared in {time.monotonic() - began:.0f} s\n", flush=True)
    return missing


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: minutes, not ten")
    parser.add_argument(
        "--only", default="", help="comma-separated scenario numbers, e.g. 0,3 (default: all)"
    )
    parser.add_argument("--rounds", type=int, default=0, help="rounds (default 3; quick 2)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail when a peer cannot be installed, instead of measuring without it",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    chosen = [int(item) for item in args.only.split(",") if item.strip()] or list(SCENARIOS)
    unknown = [number for number in chosen if number not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {unknown}; choose from {list(SCENARIOS)}", file=sys.stderr)
        return 2
    rounds = args.rounds or (2 if args.quick else 3)
    info = report.machine()
    print(f"Machine: {report.describe(info)}\n", flush=True)
    scratch = context.make_scratch()
    ctx = context.Context(
        quick=args.quick, rounds=rounds, scratch=scratch, log=report.RESULTS / "bench.log"
    )
    tables: list[report.Table] = []
    failed: list[int] = []
    started = time.monotonic()
    try:
        missing = prepare(ctx, chosen)
        if missing and args.strict:
            print(f"peer(s) {missing} could not be installed (--strict)", file=sys.stderr)
            return 1
        for number in chosen:
            module = importlib.import_module(f"scenarios.{SCENARIOS[number]}")
            summary = (module.__doc__ or SCENARIOS[number]).splitlines()[0]
            print(f"## Scenario {number}: {summary}", flush=True)
            began = time.monotonic()
            try:
                produced: list[report.Table] = module.run(ctx)
            except Exception:
                traceback.print_exc()
                failed.append(number)
                continue
            for table in produced:
                table.data.setdefault("seconds", round(time.monotonic() - began, 1))
                print(table.markdown(), flush=True)
            tables.extend(produced)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    options = {
        "quick": args.quick,
        "rounds": rounds,
        "only": chosen,
        "partial": chosen != list(SCENARIOS),
        "command": "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "seconds": round(time.monotonic() - started, 1),
    }
    path = report.save(tables, info, options)
    print(f"Results: {path} (took {options['seconds']:.0f} s)")
    if failed:
        print(f"scenario(s) {failed} failed; see the traceback above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
