"""The ``imgstream`` command: argument parsing and wiring, nothing else."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from imgstream.config import Settings

if TYPE_CHECKING:
    from imgstream.client import Client
from imgstream.logs import configure_logging


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from imgstream.launcher import run_stack

    return run_stack(settings, concurrency=args.concurrency or settings.concurrency)


def _api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from imgstream.api import create_app

    # uvicorn re-raises the stop signal after its graceful shutdown, restoring the handler it
    # found; a no-op handler there makes a requested stop exit 0 rather than die by signal.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda _signum, _frame: None)
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's own lines go through ours: JSON or text, like the rest
        access_log=False,
        proxy_headers=True,  # the client address of per-IP rate limits, from trusted proxies
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=int(settings.shutdown_grace),
    )
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from imgstream.supervisor import WorkerPool, worker_process_main

    if args.burst:
        worker_process_main(settings, burst=True)
        return 0
    return WorkerPool(settings, args.concurrency or settings.concurrency).run()


def _client(settings: Settings, args: argparse.Namespace) -> Client:
    from imgstream.client import Client

    def tell(status: int, pause: float) -> None:
        print(f"  the service answered {status}; retrying in {pause:g} s", file=sys.stderr)

    key = settings.api_key.get_secret_value() if settings.api_key else None
    return Client(args.url or f"http://localhost:{settings.port}", api_key=key, on_retry=tell)


def _submit(settings: Settings, args: argparse.Namespace) -> int:
    from imgstream.client import ClientError

    fields = {
        name: str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in (
            ("operation", args.op),
            ("operations", args.operations),
            ("width", args.width),
            ("height", args.height),
            ("fit", args.fit),
            ("enlarge", args.enlarge),
            ("sigma", args.sigma),
            ("format", args.format),
        )
        if value is not None
    }
    client = _client(settings, args)
    try:
        accepted = client.submit(args.file, fields)
        print(f"job {accepted['id']} queued", file=sys.stderr)
        job = client.wait(
            accepted["id"], on_change=lambda job: print(f"  {job['status']}", file=sys.stderr)
        )
        if job["status"] == "failed":
            print(f"failed: {job['error']}", file=sys.stderr)
            return 1
        result = job["result"]
        extension = "jpg" if result["format"] == "jpeg" else result["format"]
        target = args.output or args.file.with_name(
            f"{args.file.stem}-{accepted['id'][:8]}.{extension}"
        )
        size = client.download(job, target)
        print(
            f"saved {target} ({result['width']}x{result['height']}, {size} bytes)", file=sys.stderr
        )
        return 0
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from imgstream.client import ClientError

    client = _client(settings, args)
    try:
        print(json.dumps(client.status(args.id), indent=2))
        return 0
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()


def _dlq(settings: Settings, args: argparse.Namespace) -> int:
    import anyio

    from imgstream.deadletters import DeadLetters
    from imgstream.queue import Keys, connect

    async def run() -> int:
        redis = connect(settings.effective_redis_url)
        letters = DeadLetters(redis, Keys(settings.key_prefix))
        try:
            if args.action == "list":
                for letter in await letters.list(args.count):
                    print(
                        f"{letter.entry_id}  job {letter.job_id}  deliveries {letter.deliveries}"
                        f"  {letter.failed_at}  {letter.reason}"
                    )
                return 0
            if args.action == "purge":
                print(f"purged {await letters.purge()} dead letters")
                return 0
            if args.all:
                print(f"requeued {await letters.retry_all()} jobs")
                return 0
            if not args.id:
                print("error: give a dead-letter id or --all", file=sys.stderr)
                return 2
            entry = await letters.retry(args.id)
            if entry is None:
                print(f"error: no dead letter {args.id}", file=sys.stderr)
                return 1
            print(f"requeued as entry {entry}")
            return 0
        finally:
            await redis.aclose()

    return anyio.run(run)


def _stats(settings: Settings, args: argparse.Namespace) -> int:
    from imgstream.stats_view import show_stats

    return show_stats(settings, as_json=args.json, interval=args.interval)


def _gc(settings: Settings, _args: argparse.Namespace) -> int:
    import anyio

    from imgstream.janitor import sweep_once

    sweep = anyio.run(sweep_once, settings)
    if sweep is None:
        print("another retention sweep is running; try again shortly", file=sys.stderr)
        return 1
    stored = sweep.storage
    print(
        f"removed {sweep.files_removed} files ({sweep.bytes_removed} bytes): "
        f"{sweep.expired_jobs} expired jobs, {sweep.orphans} orphans, "
        f"{sweep.temporaries} stale temporary files; stored now: {stored.originals} originals "
        f"({stored.originals_bytes} bytes), {stored.results} results ({stored.results_bytes} bytes)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgstream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up", help="run everything: Redis (if REDIS_URL is unset), API, workers"
    )
    up.add_argument("--concurrency", type=int, help="worker processes (default: CPUs)")
    up.set_defaults(handler=_up)

    api = commands.add_parser("api", help="run the HTTP API and web page")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.set_defaults(handler=_api)

    worker = commands.add_parser("worker", help="run worker processes")
    worker.add_argument("--concurrency", type=int, help="worker processes (default: CPUs)")
    worker.add_argument(
        "--burst", action="store_true", help="one process; exit when the queue is empty"
    )
    worker.set_defaults(handler=_worker)

    submit = commands.add_parser("submit", help="upload an image, wait, save the result")
    submit.add_argument("file", type=Path)
    submit.add_argument("--op", choices=("resize", "grayscale", "blur"))
    submit.add_argument("--operations", help='JSON list, e.g. \'[{"op":"grayscale"}]\'')
    submit.add_argument("--width", type=int)
    submit.add_argument("--height", type=int)
    submit.add_argument("--fit", choices=("inside", "cover", "fill"))
    submit.add_argument("--enlarge", action="store_true", default=None)
    submit.add_argument("--sigma", type=float)
    submit.add_argument("--format", choices=("jpeg", "png", "webp"))
    submit.add_argument("-o", "--output", type=Path)
    submit.add_argument("--url", help="API base URL (default: http://localhost:PORT)")
    submit.set_defaults(handler=_submit)

    status = commands.add_parser("status", help="show a job's status as JSON")
    status.add_argument("id")
    status.add_argument("--url", help="API base URL (default: http://localhost:PORT)")
    status.set_defaults(handler=_status)

    dlq = commands.add_parser("dlq", help="inspect, retry or purge dead-lettered jobs")
    dlq_actions = dlq.add_subparsers(dest="action", required=True)
    dlq_list = dlq_actions.add_parser("list", help="show dead letters, oldest first")
    dlq_list.add_argument("--count", type=int, default=100)
    dlq_retry = dlq_actions.add_parser("retry", help="queue dead-lettered jobs again")
    dlq_retry.add_argument("id", nargs="?", help="dead-letter entry id (from `dlq list`)")
    dlq_retry.add_argument("--all", action="store_true", help="every dead letter")
    dlq_actions.add_parser("purge", help="forget every dead letter")
    dlq.set_defaults(handler=_dlq)

    stats = commands.add_parser("stats", help="queue, workers, speed, failures (live; from Redis)")
    stats.add_argument("--json", action="store_true", help="print one snapshot as JSON and exit")
    stats.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    stats.set_defaults(handler=_stats)

    gc = commands.add_parser("gc", help="delete expired jobs' files and stale temporaries now")
    gc.set_defaults(handler=_gc)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    status: int = args.handler(settings, args)
    return status


if __name__ == "__main__":
    sys.exit(main())
