"""The web page's static files, served so that a new release shows at once.

Every asset is revalidated on each use (``no-cache`` plus the ETag Starlette derives from
the file): a cheap ``304`` when nothing changed, the new file right after an upgrade, and
no build step or fingerprinted names needed.
"""

from __future__ import annotations

import os

from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

CACHE_CONTROL = "no-cache"


class StaticAssets(StaticFiles):
    """``StaticFiles`` whose answers (``200`` and ``304`` alike) say ``Cache-Control: no-cache``."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = CACHE_CONTROL
        return response
