"""API CPU per upload (issue 14): what one ``POST /api/jobs`` costs the API process.

Runs standalone, no workers: a private redis-server, the real ``imgstream api`` process of
this checkout (and, with ``--base REF``, the same process from another commit's ``src/``,
alternating round by round), one keep-alive client sending uploads one at a time. The API's
CPU (user + system, from ``/proc/PID/stat``) over a batch, divided by the batch, is the cost
of one upload, including the status read that follows it when ``--status`` is given.

    .venv/bin/python bench/api_cpu.py                     # this checkout alone
    .venv/bin/python bench/api_cpu.py --base main         # against main's code, alternating
    .venv/bin/python bench/api_cpu.py --rounds 5 --tiny 1000 --large 20
    .venv/bin/python bench/api_cpu.py --src variant=/tmp/variant/src   # any src/ tree
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from imgstream.redis_server import RedisServer

import images
from context import BENCH, ROOT
from httpload import Connection, expect, multipart
from measure import Summary, cpu_seconds
from service import Imgstream

FIELDS = {"operation": "grayscale"}


@dataclass
class Variant:
    name: str
    service: Imgstream
    costs: dict[str, list[float]] = field(default_factory=dict)


def export_src(ref: str, into: Path) -> Path:
    """``src/`` of commit ``ref``, written out under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


async def batch(port: int, body: bytes, content_type: str, count: int, status: bool) -> None:
    connection = Connection("127.0.0.1", port)
    try:
        for _ in range(count):
            response = await connection.request("POST", "/api/jobs", body, content_type)
            job = expect(response, 202, "an upload").json()
            if status:
                expect(await connection.request("GET", f"/api/jobs/{job['id']}"), 200, "status")
    finally:
        await connection.close()


def measure(variant: Variant, label: str, data: bytes, count: int, status: bool) -> float:
    """CPU ms of the API per upload over ``count`` uploads of ``data``."""
    assert variant.service.api is not None
    pid = variant.service.api.pid
    body, content_type = multipart(FIELDS, "image", data)
    asyncio.run(batch(variant.service.port, body, content_type, max(2, count // 10), status))
    before = cpu_seconds(pid)
    asyncio.run(batch(variant.service.port, body, content_type, count, status))
    spent = (cpu_seconds(pid) - before) * 1000 / count
    variant.costs.setdefault(label, []).append(spent)
    shutil.rmtree(variant.service.data_dir / "originals", ignore_errors=True)
    (variant.service.data_dir / "originals").mkdir()
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="also measure this commit's src/, alternating")
    parser.add_argument(
        "--src", action="append", default=[], metavar="NAME=DIR", help="and this src/ tree"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiny", type=int, default=500, help="64x64 PNG uploads per round")
    parser.add_argument("--large", type=int, default=15, help="6.1 MB JPEG uploads per round")
    parser.add_argument("--status", action="store_true", help="GET each job's status too")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    options = parser.parse_args()
    # A SIGTERM (a profiler's run ended, say) still stops the API and Redis started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tiny = images.tiny_png().read_bytes()
    large = images.imgproxy_jpeg().read_bytes()
    big = f"{len(large) / 1e6:.1f} MB"
    scratch = Path(tempfile.mkdtemp(prefix="api-cpu-", dir=BENCH / ".cache"))
    sources = {"this": ROOT / "src"}
    if options.base:
        sources[options.base] = export_src(options.base, scratch)
    for given in options.src:
        name, _, directory = given.partition("=")
        sources[name] = Path(directory).resolve()
    variants: list[Variant] = []
    try:
        with RedisServer(scratch / "redis") as server:
            for name, src in sources.items():
                safe = name.replace("/", "_")
                service = Imgstream(
                    server.url,
                    scratch / f"data-{safe}",
                    scratch / f"api-{safe}.log",
                    settings={"PYTHONPATH": f"{BENCH}:{src}"},
                )
                service.start_api()
                variants.append(Variant(name, service))
            for round_ in range(options.rounds):
                order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
                for variant in order:
                    for label, data, count in (
                        ("tiny", tiny, options.tiny),
                        (big, large, options.large),
                    ):
                        if count:
                            spent = measure(variant, label, data, count, options.status)
                            print(f"round {round_ + 1} {variant.name:>8} {label:>7}: "
                                  f"{spent:6.2f} ms", file=sys.stderr)  # fmt: skip
    finally:
        for variant in variants:
            variant.service.stop()
        if not options.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"API CPU ms per upload{' + status read' if options.status else ''}, "
          f"{big} = the 7360x4912 JPEG; median (min-max) of "
          f"{options.rounds} rounds\n")  # fmt: skip
    labels = list(variants[0].costs)
    print("| variant | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for variant in variants:
        cells = [Summary.of(variant.costs[label]).show(2) for label in labels]
        print(f"| {variant.name} | " + " | ".join(cells) + " |")
    if len(variants) > 1:
        for label in labels:
            new, old = (Summary.of(v.costs[label]).median for v in variants[:2])
            print(f"\n{label}: this / {variants[1].name} = {new / old:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
