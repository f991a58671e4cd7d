"""imgstream's ASGI app under a server other than its own, for ``bench/http_servers.py``.

``python bench/runners/http_app.py httptools|h11`` serves it with plain uvicorn (uvloop,
the chosen HTTP protocol, every other option as ``imgstream api`` passes them, but none of
its limits); granian imports
``runners.http_app:create`` as its factory. Settings come from the environment, as for
``imgstream api``.
"""

from __future__ import annotations

import signal
import sys

from fastapi import FastAPI

from imgstream.api import create_app
from imgstream.config import Settings


def create() -> FastAPI:
    """The app as ``imgstream api`` builds it (granian's ``--factory`` target)."""
    return create_app(Settings())


def serve_uvicorn(protocol: str) -> None:
    import uvicorn

    settings = Settings()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):  # exit 0 on a requested stop
        signal.signal(stop_signal, lambda _signum, _frame: None)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol,
        log_level=settings.log_level.lower(),
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=int(settings.shutdown_grace),
        h11_max_incomplete_event_size=settings.http_max_header_bytes,
        timeout_keep_alive=settings.http_keepalive_timeout,
    )


if __name__ == "__main__":
    serve_uvicorn(sys.argv[1])
