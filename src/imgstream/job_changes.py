"""Live job status for any API instance: the change announcements workers make in Redis.

Every status change (``lua/start.lua``, ``lua/finish.lua``) is published on the channel named
like the job hash, so whichever API instance a client reaches can follow whichever job.

One API process holds **one** pub/sub connection (``EventHub``), whatever the number of
streams: each job followed is subscribed once, however many clients follow it, and the
hub reads the job hash once per announcement and hands the record to every follower. An
event stream then costs memory, never a Redis connection of its own.

A follower is registered and its channel confirmed *before* it reads the job's state, so a
change that lands between the two arrives as an announcement. Pub/sub delivers at most once
(and not at all while the connection is being re-made), so a follower also re-reads the
hash itself whenever it has heard nothing for a while: the stream still ends with the job's
final status.

Caps: ``IMGSTREAM_MAX_STREAMS`` followers per process, ``IMGSTREAM_MAX_STREAMS_PER_CLIENT``
per client (an API key, or an IP when access control is off).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from imgstream.jobs import JobRecord
from imgstream.keys import Keys

log = logging.getLogger("imgstream.events")

SUBSCRIBE_TIMEOUT = 5.0
"""Seconds to wait for Redis to confirm a subscription before giving up."""
LISTEN_TICK = 1.0
"""Seconds one read of the shared connection waits before looking again."""


class TooManyStreams(Exception):
    """A cap on event streams is reached; ``scope`` says which ("client" or "process")."""

    def __init__(self, scope: str, limit: int, setting: str) -> None:
        super().__init__(f"{limit} event streams are open {_WHOSE[scope]} ({setting})")
        self.scope = scope
        self.limit = limit
        self.setting = setting


_WHOSE = {"client": "for this client", "process": "on this server"}


@dataclass(eq=False)
class Follower:
    """One event stream's view of a job: what the hub pushed since it last looked."""

    job_id: str
    client: str
    _hub: EventHub
    _pushed: list[JobRecord | None] = field(default_factory=list)
    _wake: anyio.Event = field(default_factory=anyio.Event)

    @property
    def job_ids(self) -> tuple[str, ...]:
        return (self.job_id,)

    def push(self, job_id: str, record: JobRecord | None) -> None:
        self._pushed[:] = [record]  # only the newest state matters
        self._wake.set()

    async def next(self, seconds: float) -> tuple[JobRecord | None, bool]:
        """The job's newest state and whether it was announced; after ``seconds`` without
        an announcement the hash is read here instead (an announcement may have been lost).

        Raises the client's Redis errors only from that re-read.
        """
        with anyio.move_on_after(seconds):
            await self._wake.wait()
        if self._pushed:
            record = self._pushed.pop()
            self._wake = anyio.Event()
            return record, True
        self._wake = anyio.Event()
        return await self._hub.read(self.job_id), False

    async def aclose(self) -> None:
        """Stop following; safe while being cancelled."""
        with anyio.CancelScope(shield=True):
            await self._hub.leave(self)


@dataclass(eq=False)
class BatchFollower:
    """One event stream's view of several jobs (a batch): one stream against the caps,
    however many jobs it follows."""

    job_ids: tuple[str, ...]
    client: str
    _hub: EventHub
    _pushed: dict[str, JobRecord | None] = field(default_factory=dict)
    _wake: anyio.Event = field(default_factory=anyio.Event)

    def push(self, job_id: str, record: JobRecord | None) -> None:
        self._pushed[job_id] = record
        self._wake.set()

    async def next(
        self, seconds: float, unfinished: Iterable[str]
    ) -> tuple[dict[str, JobRecord | None], bool]:
        """The jobs whose state was announced, newest states, and True; after ``seconds``
        without an announcement the ``unfinished`` jobs are read here instead, and False.

        Raises the client's Redis errors only from that re-read.
        """
        with anyio.move_on_after(seconds):
            await self._wake.wait()
        self._wake = anyio.Event()
        if self._pushed:
            pushed, self._pushed = self._pushed, {}
            return pushed, True
        return {job_id: await self._hub.read(job_id) for job_id in unfinished}, False

    async def aclose(self) -> None:
        """Stop following; safe while being cancelled."""
        with anyio.CancelScope(shield=True):
            await self._hub.leave(self)


Watcher = Follower | BatchFollower
"""Whatever the hub pushes a job's newest state to."""


class EventHub:
    """Every event stream of one API process, fed from one shared subscription."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        read: Callable[[str], Awaitable[JobRecord | None]],
        *,
        max_streams: int,
        max_per_client: int,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.read = read
        self.max_streams = max_streams
        self.max_per_client = max_per_client
        self._pubsub: PubSub = redis.pubsub()
        self._followers: dict[str, set[Watcher]] = {}
        self._watching: set[Watcher] = set()
        self._confirmed: dict[str, anyio.Event] = {}
        self._per_client: Counter[str] = Counter()
        self._listening = anyio.Event()
        self._commands = anyio.Lock()
        """One (un)subscribe at a time: the client makes its connection on the first one."""
        self._refreshing: set[str] = set()
        self._again: set[str] = set()
        self._tasks: TaskGroup | None = None

    @property
    def streams(self) -> int:
        return sum(self._per_client.values())

    def channel(self, job_id: str) -> str:
        """The channel a job's changes are announced on (``Keys.channel``)."""
        return self.keys.channel(job_id)

    async def follow(self, job_id: str, client: str) -> Follower:
        """A follower of ``job_id`` whose channel Redis has confirmed; close it when done.

        ``TooManyStreams`` when a cap is reached; the client's connection errors when Redis
        is unreachable or does not confirm in time.
        """
        follower = Follower(job_id, client, self)
        await self._register(follower)
        return follower

    async def follow_batch(self, job_ids: Iterable[str], client: str) -> BatchFollower:
        """``follow`` for several jobs at once, one stream against the caps."""
        follower = BatchFollower(tuple(dict.fromkeys(job_ids)), client, self)
        await self._register(follower)
        return follower

    async def _register(self, watcher: Watcher) -> None:
        client = watcher.client
        if self.streams >= self.max_streams:
            raise TooManyStreams("process", self.max_streams, "IMGSTREAM_MAX_STREAMS")
        if self._per_client[client] >= self.max_per_client:
            raise TooManyStreams("client", self.max_per_client, "IMGSTREAM_MAX_STREAMS_PER_CLIENT")
        self._per_client[client] += 1
        self._watching.add(watcher)
        new = []
        for job_id in watcher.job_ids:
            followers = self._followers.setdefault(job_id, set())
            followers.add(watcher)
            if len(followers) == 1:
                self._confirmed[job_id] = anyio.Event()
                new.append(self.channel(job_id))
        try:
            if new:
                async with self._commands:
                    await self._pubsub.subscribe(*new)
                self._listening.set()
            with anyio.fail_after(SUBSCRIBE_TIMEOUT):
                for job_id in watcher.job_ids:
                    await self._confirmed[job_id].wait()
        except TimeoutError:
            await self.leave(watcher)
            raise RedisTimeoutError("Redis did not confirm the subscription in time") from None
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.leave(watcher)
            raise

    async def leave(self, watcher: Watcher) -> None:
        if watcher not in self._watching:
            return
        self._watching.discard(watcher)
        self._per_client[watcher.client] -= 1
        if self._per_client[watcher.client] <= 0:
            del self._per_client[watcher.client]
        unwatched = []
        for job_id in watcher.job_ids:
            followers = self._followers.get(job_id)
            if followers is None:
                continue
            followers.discard(watcher)
            if not followers:
                del self._followers[job_id]
                self._confirmed.pop(job_id, None)
                unwatched.append(self.channel(job_id))
        if not unwatched:
            return
        try:
            async with self._commands:
                await self._pubsub.unsubscribe(*unwatched)
        except RedisError as exc:  # the subscription goes with the connection, when it goes
            log.warning("could not unsubscribe from %d channels: %s", len(unwatched), exc)

    async def run(self) -> None:
        """Read the shared connection until cancelled; Redis trouble is waited out."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            await self._listening.wait()
            pause = 0.1
            while True:
                try:
                    message = await self._pubsub.get_message(timeout=LISTEN_TICK)
                    pause = 0.1
                except RedisError as exc:
                    log.warning("event subscription interrupted (%s); retrying", exc)
                    await anyio.sleep(pause)
                    pause = min(pause * 2, 5.0)
                    self._refresh_all()  # announcements made meanwhile are lost
                    continue
                if message is not None:
                    self._handle(message)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # unannotated in older redis-py

    def _handle(self, message: dict[str, Any]) -> None:
        job_id = self.keys.job_of_channel(str(message.get("channel", "")))
        kind = message.get("type")
        if kind == "subscribe":
            confirmed = self._confirmed.get(job_id)
            if confirmed is not None:
                if confirmed.is_set():  # a re-subscription after a reconnect
                    self._refresh(job_id)
                confirmed.set()
        elif kind == "message" and job_id in self._followers:
            self._refresh(job_id)

    def _refresh_all(self) -> None:
        for job_id in list(self._followers):
            self._refresh(job_id)

    def _refresh(self, job_id: str) -> None:
        """Read the job once for all its followers; one read at a time per job."""
        if self._tasks is None:
            return
        if job_id in self._refreshing:
            self._again.add(job_id)
            return
        self._refreshing.add(job_id)
        self._tasks.start_soon(self._read_and_push, job_id)

    async def _read_and_push(self, job_id: str) -> None:
        try:
            while True:
                self._again.discard(job_id)
                try:
                    record = await self.read(job_id)
                except RedisError as exc:
                    log.warning("could not read job %s for its streams: %s", job_id, exc)
                    return  # the followers re-read on their own at their next tick
                for follower in list(self._followers.get(job_id, ())):
                    follower.push(job_id, record)
                if job_id not in self._again:
                    return
        finally:
            self._refreshing.discard(job_id)
