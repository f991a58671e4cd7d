"""What each ``imgstream`` command does, once ``cli`` has parsed its arguments.

Heavy imports stay inside the commands, so that ``imgstream submit`` never loads a web
framework nor ``imgstream api`` an image library it does not use.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

from imgstream.config import Settings
from imgstream.keys import Keys

if TYPE_CHECKING:
    from imgstream.client import Client

log = logging.getLogger("imgstream")


def up(settings: Settings, args: argparse.Namespace) -> int:
    from imgstream.launcher import run_stack

    return run_stack(settings, concurrency=args.concurrency or settings.concurrency)


def api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from imgstream.api import create_app
    from imgstream.http_server import protocol_for
    from imgstream.malloc_arenas import limit_malloc_arenas

    limit_malloc_arenas(settings.malloc_arenas)
    settings = _part_redis(settings)
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
        http=protocol_for(settings),  # httptools with header, body-pace and connection limits
        timeout_keep_alive=settings.http_keepalive_timeout,
    )
    return 0


def worker(settings: Settings, args: argparse.Namespace) -> int:
    from imgstream.malloc_arenas import limit_malloc_arenas

    limit_malloc_arenas(settings.malloc_arenas)  # before libvips or any thread starts
    from imgstream.supervisor import WorkerPool, worker_process_main

    settings = _part_redis(settings)
    if args.burst:
        worker_process_main(settings, burst=True)
        return 0
    return WorkerPool(settings, args.concurrency or settings.concurrency).run()


def _part_redis(settings: Settings) -> Settings:
    """``settings`` pointing at the Redis a part (API, workers) should use, said in its log:
    REDIS_URL, else the running ``imgstream up``'s (a worker added by hand joins it)."""
    from imgstream.runtime import find_redis, redacted

    url, why = find_redis(settings)
    log.info("using Redis at %s (%s)", redacted(url), why)
    return settings.model_copy(update={"redis_url": url})


def _with_redis(settings: Settings) -> Settings:
    """``settings`` pointing at the Redis this command should read, said on stderr."""
    from imgstream.runtime import find_redis, redacted

    url, why = find_redis(settings)
    print(f"Redis: {redacted(url)} ({why})", file=sys.stderr)
    return settings.model_copy(update={"redis_url": url})


def _client(settings: Settings, args: argparse.Namespace) -> Client:
    from imgstream.client import Client
    from imgstream.runtime import find_api

    url, why = find_api(settings, args.url)
    print(f"API: {url} ({why})", file=sys.stderr)
    key = settings.api_key.get_secret_value() if settings.api_key else None

    def tell(status: int, pause: float) -> None:
        print(f"  the service answered {status}; retrying in {pause:g} s", file=sys.stderr)

    return Client(url, api_key=key, on_retry=tell)


def submit(settings: Settings, args: argparse.Namespace) -> int:
    from rich.console import Console

    from imgstream.operations import FORM_FIELDS
    from imgstream.submit import submit_files

    missing = [str(path) for path in args.files if not path.is_file()]
    if missing:
        print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    fields = {
        name: str(value).lower() if isinstance(value, bool) else str(value)
        for name in FORM_FIELDS
        if (value := getattr(args, "op" if name == "operation" else name, None)) is not None
    }
    client = _client(settings, args)
    try:
        return submit_files(
            client,
            args.files,
            fields,
            output=args.output,
            timeout=args.timeout,
            idempotency_key=args.idempotency_key,
            zip_path=args.zip,
            err=Console(stderr=True),
            out=Console(soft_wrap=True),
        )
    finally:
        client.close()


def status(settings: Settings, args: argparse.Namespace) -> int:
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


def keda_triggers(settings: Settings, args: argparse.Namespace) -> int:
    """Print the ``triggers:`` of a KEDA ScaledObject for the streams these settings serve."""
    print("  triggers:")
    for trigger in scaler_triggers(
        settings, args.addresses, lag_count=args.lag_count, pending_count=args.pending_count
    ):
        print(f"    - type: {trigger['type']}")
        print(f"      name: {trigger['name']}")
        print("      metadata:")
        for key, value in trigger["metadata"].items():
            print(f"        {key}: {json.dumps(value)}")
    return 0


def scaler_triggers(
    settings: Settings, addresses: str, *, lag_count: int, pending_count: int
) -> list[dict[str, Any]]:
    """A lag and a pending trigger for every stream a worker of ``settings`` reads (each
    partition's, each served lane's): so a backlog on any one of them wakes a worker, and
    one stays while any job is in hand (docs/deployment.md#kubernetes)."""
    keys = Keys(settings.key_prefix)
    cluster = settings.redis_cluster
    connection = (
        {"addresses": addresses, "passwordFromEnv": "REDIS_PASSWORD"}
        if cluster
        else {"address": addresses, "passwordFromEnv": "REDIS_PASSWORD"}
    )
    triggers: list[dict[str, Any]] = []
    for lane in settings.served_lanes:
        for part in range(settings.partitions):
            name = f"p{part}" + (f"-{lane}" if lane else "")
            stream = {"stream": keys.partition(part).lane(lane), "consumerGroup": settings.group}
            counts = {"lag": {"lagCount": str(lag_count)},
                      "pending": {"pendingEntriesCount": str(pending_count)}}  # fmt: skip
            for kind, count in counts.items():
                triggers.append(
                    {
                        "type": "redis-cluster-streams" if cluster else "redis-streams",
                        "name": f"jobs-{kind}-{name}",
                        "metadata": {**connection, **stream, **count, "activationLagCount": "0"},
                    }
                )
    return triggers


def dlq(settings: Settings, args: argparse.Namespace) -> int:
    import anyio

    from imgstream.deployment import Deployment

    settings = _with_redis(settings)

    async def run() -> int:
        deployment = Deployment.open(settings, one_shot=True)
        letters = deployment.dead_letters
        try:
            if args.action == "list":
                found = await letters.list(args.count)
                for letter in found:
                    print(
                        f"{letter.entry_id}  job {letter.job_id}  deliveries {letter.deliveries}"
                        f"  {letter.failed_at}  {letter.reason}"
                    )
                if not found:
                    print("no dead letters", file=sys.stderr)
                return 0
            if args.action == "purge":
                print(f"purged {await letters.purge()} dead letters")
                return 0
            if args.all:
                print(f"requeued {await letters.retry_all()} jobs")
                return 0
            if not args.id:
                print(
                    "error: give a dead-letter id (from `imgstream dlq list`) or --all",
                    file=sys.stderr,
                )
                return 2
            entry = await letters.retry(args.id)
            if entry is None:
                print(f"error: no dead letter {args.id}", file=sys.stderr)
                return 1
            print(f"requeued as entry {entry}")
            return 0
        finally:
            await deployment.aclose()

    return anyio.run(run)


def stats(settings: Settings, args: argparse.Namespace) -> int:
    from imgstream.stats_view import show_stats

    return show_stats(_with_redis(settings), as_json=args.json, interval=args.interval)


def gc(settings: Settings, _args: argparse.Namespace) -> int:
    import anyio

    from imgstream.janitor import sweep_once
    from imgstream.storage import StorageUnavailable

    try:
        sweep = anyio.run(sweep_once, _with_redis(settings))
    except StorageUnavailable as exc:
        print(f"imgstream gc: {exc}", file=sys.stderr)
        return 1
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


def health(settings: Settings, args: argparse.Namespace) -> int:
    import anyio

    from imgstream.heartbeats import worker_alive_here

    within = args.within or settings.visibility_timeout
    alive = anyio.run(worker_alive_here, settings, within)
    if not alive:
        print(f"no worker on this host sent a heartbeat in the last {within:g} s", file=sys.stderr)
    return 0 if alive else 1
