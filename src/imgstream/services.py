"""What every HTTP route of one API process shares: its deployment (settings, queue, storage,
dead letters…), limits and event hub, built once by ``create_app``'s lifespan and kept on
``app.state.services``.

Both route modules (``api`` and ``ops_api``) read it from here, so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from starlette.requests import Request

from imgstream.config import Settings
from imgstream.deployment import Deployment
from imgstream.job_changes import EventHub
from imgstream.operations import Limits
from imgstream.queue import JobQueue
from imgstream.storage import Storage

STATIC_DIR = Path(str(resources.files("imgstream").joinpath("static")))
"""The web page, dashboard and their assets, shipped inside the package."""


@dataclass(frozen=True, slots=True)
class Services:
    deployment: Deployment
    limits: Limits
    hub: EventHub

    @property
    def settings(self) -> Settings:
        return self.deployment.settings

    @property
    def queue(self) -> JobQueue:
        return self.deployment.queue

    @property
    def storage(self) -> Storage:
        return self.deployment.storage


def services_of(request: Request) -> Services:
    """The ``Services`` of the app that ``request`` came to."""
    services: Services = request.app.state.services
    return services
