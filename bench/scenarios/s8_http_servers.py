"""HTTP servers for the API: imgstream's guarded h11 vs uvicorn (httptools, h11) vs granian.

The measurement lives in ``bench/http_servers.py`` (also runnable on its own); see its
docstring for what is measured and how.
"""

from __future__ import annotations

from http_servers import run

__all__ = ["run"]
