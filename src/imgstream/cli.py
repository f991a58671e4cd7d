"""The ``imgstream`` command: argument parsing and wiring, nothing else."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from imgstream import commands as run
from imgstream.config import Settings
from imgstream.logs import configure_logging
from imgstream.operations import OPERATION_NAMES, Direction, Fit, Gravity
from imgstream.output import FORMAT_ALIASES, OutputFormat

DESCRIPTION = """\
imgstream resizes, grayscales and blurs images. A web API takes uploads and queues them in
Redis Streams; worker processes do the work. Start everything with `imgstream up`, then
open http://localhost:3000 or use the commands below."""

EPILOG = """\
examples:
  imgstream up                                    Redis, API, web page and workers
  imgstream submit photo.jpg --op resize --width 800 -o small.jpg
  imgstream submit *.png --op grayscale --format webp -o out/ --zip all.zip
  imgstream status JOB_ID                         a job, as JSON
  imgstream stats                                 queue, workers, speed, failures (live)
  imgstream dlq list                              jobs that failed for good

Without REDIS_URL and --url, the commands talk to the Redis and the API of the `imgstream up`
running with this data directory (IMGSTREAM_DATA_DIR, default ./data), and say so on stderr.
`imgstream COMMAND --help` tells more about each command. Settings: docs/configuration.md."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgstream",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_commands(commands)
    _add_job_commands(commands)
    _add_operator_commands(commands)
    return parser


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    details: str = "",
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}." + (f"\n\n{details}" if details else ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_run_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = _command(
        commands,
        "up",
        "run everything: Redis (unless REDIS_URL is set), API, web page, workers",
        "Prints `imgstream is up` once the API answers and the workers read; Ctrl-C stops all.\n"
        "Without REDIS_URL it runs a private redis-server with its data in DATA_DIR/redis.\n"
        "One `up` per data directory: a second one there refuses to start.",
    )
    up.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="worker processes (default: IMGSTREAM_CONCURRENCY, else the CPU count)",
    )
    up.set_defaults(handler=run.up)

    api = _command(commands, "api", "run the HTTP API and the web page only")
    api.add_argument("--host", help="address to listen on (default: IMGSTREAM_HOST, 127.0.0.1)")
    api.add_argument("--port", type=int, help="port to listen on (default: IMGSTREAM_PORT, 3000)")
    api.set_defaults(handler=run.api)

    worker = _command(commands, "worker", "run worker processes only (they read REDIS_URL)")
    worker.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="worker processes (default: IMGSTREAM_CONCURRENCY, else CPUs)",
    )
    worker.add_argument(
        "--operations",
        dest="worker_operations",
        metavar="OP,OP",
        help="serve only these lanes (needs IMGSTREAM_STREAM_PER_OPERATION=true; default: "
        "IMGSTREAM_WORKER_OPERATIONS, else every operation)",
    )
    worker.add_argument(
        "--burst",
        action="store_true",
        help="run one worker process and exit once the queue is empty",
    )
    worker.set_defaults(handler=run.worker)

    health = _command(
        commands,
        "health",
        "exit 0 when a worker on this host is alive (a container check)",
        "Alive: its heartbeat reached Redis within --within seconds.",
    )
    health.add_argument(
        "--within",
        type=float,
        metavar="SECONDS",
        help="how fresh the heartbeat must be (default: the visibility timeout)",
    )
    health.set_defaults(handler=run.health)


def _add_job_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    formats = [output.value for output in OutputFormat] + list(FORMAT_ALIASES)
    submit = _command(
        commands,
        "submit",
        "upload images, wait for their jobs, save the results",
        "Shows a progress bar per file, then one line per file with the result's size and\n"
        "link. Give one operation with --op and its options, or a chain with --operations.",
    )
    submit.add_argument("files", type=Path, nargs="+", metavar="FILE", help="images to process")
    submit.add_argument("--op", choices=OPERATION_NAMES, help="the operation to apply")
    submit.add_argument(
        "--operations",
        metavar="JSON",
        help='steps in order, e.g. \'[{"op":"resize","width":800},{"op":"grayscale"}]\'',
    )
    submit.add_argument(
        "--width", type=int, metavar="PX", help="resize: target width; crop: box width"
    )
    submit.add_argument(
        "--height", type=int, metavar="PX", help="resize: target height; crop: box height"
    )
    submit.add_argument(
        "--fit",
        choices=[fit.value for fit in Fit],
        help="resize: inside (default, keep the aspect ratio), cover (crop), fill (stretch), "
        "contain (fit and pad)",
    )
    submit.add_argument(
        "--enlarge", action="store_true", default=None, help="resize: allow upscaling"
    )
    submit.add_argument(
        "--gravity",
        choices=[gravity.value for gravity in Gravity],
        help="resize with --fit cover: the part kept (default centre; smart: the busiest)",
    )
    submit.add_argument(
        "--background", metavar="#RRGGBB", help="resize --fit contain / rotate: fill colour"
    )
    submit.add_argument(
        "--sigma", type=float, help="blur: strength (default 2.0); sharpen: radius (1.0)"
    )
    submit.add_argument("--left", type=int, metavar="PX", help="crop: box left edge (0)")
    submit.add_argument("--top", type=int, metavar="PX", help="crop: box top edge (0)")
    submit.add_argument(
        "--angle", type=float, metavar="DEG", help="rotate: degrees clockwise (90s lossless)"
    )
    submit.add_argument(
        "--direction", choices=[d.value for d in Direction], help="flip: which way to mirror"
    )
    submit.add_argument("--size", type=int, metavar="PX", help="pixelate: block side (10)")
    for name in ("brightness", "contrast", "saturation"):
        submit.add_argument(
            f"--{name}", type=float, metavar="X", help=f"adjust: {name} multiplier (1: as is)"
        )
    submit.add_argument(
        "--threshold", type=float, help="trim: how far a border may differ (default 10)"
    )
    submit.add_argument(
        "--format",
        choices=formats,
        help="output format (default: the input's if JPEG, PNG or WebP, else PNG)",
    )
    submit.add_argument("--quality", type=int, metavar="1-100", help="JPEG, WebP, AVIF quality")
    submit.add_argument(
        "--max-bytes",
        type=int,
        metavar="N",
        help="largest result: lower the quality until it fits, or fail",
    )
    submit.add_argument(
        "--keep-metadata",
        dest="strip",
        action="store_false",
        default=None,
        help="keep EXIF, XMP and comments (default: removed)",
    )
    submit.add_argument(
        "--callback-url",
        metavar="URL",
        help="a public http(s) URL the API POSTs each job's final status to (signed webhook)",
    )
    submit.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="sent as Idempotency-Key (with the one batch request for several files): "
        "a rerun makes no new jobs",
    )
    submit.add_argument(
        "--zip",
        type=Path,
        metavar="FILE",
        help="also save all results as one ZIP (the files go as one batch; streamed to disk)",
    )
    submit.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="PATH",
        help="where to save: a file for one image, a directory for several "
        "(default: beside each image, as NAME-JOBID.EXT)",
    )
    submit.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="give up waiting for the jobs after this long (default 600)",
    )
    _api_url_option(submit)
    submit.set_defaults(handler=run.submit)

    status = _command(commands, "status", "show a job's status as JSON")
    status.add_argument("id", metavar="JOB_ID", help="the job's id, as `submit` printed it")
    _api_url_option(status)
    status.set_defaults(handler=run.status)


def _api_url_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--url",
        help="the API's base URL (default: the running `imgstream up`'s,"
        " else http://localhost:IMGSTREAM_PORT)",
    )


def _add_operator_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = _command(
        commands,
        "dlq",
        "list, retry or forget jobs that failed for good",
        "Dead letters are jobs that used up their attempts or kept killing workers.",
    )
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="show dead letters, oldest first",
        description="Show dead letters, oldest first.",
    )
    listing.add_argument("--count", type=int, default=100, help="at most this many (100)")
    retry = actions.add_parser(
        "retry",
        help="queue dead-lettered jobs again",
        description="Queue dead-lettered jobs again.",
    )
    retry.add_argument(
        "id",
        nargs="?",
        metavar="ENTRY_ID",
        help="the dead letter's entry id, from `imgstream dlq list`",
    )
    retry.add_argument("--all", action="store_true", help="every dead letter")
    actions.add_parser(
        "purge",
        help="forget every dead letter (the jobs stay failed)",
        description="Forget every dead letter; the jobs stay failed.",
    )
    dlq.set_defaults(handler=run.dlq)

    keda = _command(
        commands,
        "keda-triggers",
        "print the KEDA ScaledObject triggers for the streams workers serve",
        "One lag trigger and one pending trigger per partition and lane a worker of these\n"
        "settings reads (IMGSTREAM_PARTITIONS, IMGSTREAM_STREAM_PER_OPERATION,\n"
        "IMGSTREAM_WORKER_OPERATIONS, IMGSTREAM_REDIS_CLUSTER): paste them under the\n"
        "ScaledObject's spec (deploy/k8s/worker-scaledobject.yaml).",
    )
    keda.add_argument(
        "--addresses",
        default="redis-cluster:6379",
        help="the Redis address(es) KEDA connects to (redis-cluster:6379)",
    )
    keda.add_argument(
        "--lag-count", type=int, default=20, metavar="N", help="waiting jobs per worker pod (20)"
    )
    keda.add_argument(
        "--pending-count", type=int, default=4, metavar="N",
        help="jobs in hand that keep a pod (4)",
    )  # fmt: skip
    keda.set_defaults(handler=run.keda_triggers)

    stats = _command(
        commands,
        "stats",
        "show the queue, workers, speed and failures, live",
        "Reads Redis directly, so it works where only Redis is reachable.",
    )
    stats.add_argument("--json", action="store_true", help="print one snapshot as JSON and exit")
    stats.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between refreshes (2)",
    )
    stats.set_defaults(handler=run.stats)

    gc = _command(
        commands,
        "gc",
        "delete expired jobs' files and stale temporary files now",
        "The workers do this every IMGSTREAM_JANITOR_INTERVAL seconds anyway.",
    )
    gc.set_defaults(handler=run.gc)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    given = getattr(args, "worker_operations", None)
    overrides = {"worker_operations": given} if given is not None else {}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        for problem in exc.errors():
            if not problem["loc"]:  # a rule between settings: its message names them
                print(f"imgstream: {problem['msg']}", file=sys.stderr)
                continue
            name = "IMGSTREAM_" + "_".join(str(piece) for piece in problem["loc"]).upper()
            print(f"imgstream: the setting {name} is not valid: {problem['msg']}",
                  file=sys.stderr)  # fmt: skip
        return 2
    configure_logging(settings.log_level, settings.log_format)
    status: int = args.handler(settings, args)
    return status


if __name__ == "__main__":
    sys.exit(main())
