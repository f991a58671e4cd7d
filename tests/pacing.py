"""Pacing helpers for tests that break things mid-run: they follow what the service answers
and announces, so a test acts on progress (jobs accepted, jobs ended), never on the clock."""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import redis

from imgstream.keys import Keys

from fleet import worker_pids
from images import encode, photo
from service import Service, pid_of_consumer, process_age

SENTINEL = b"sentinel"


def listen_for_final_statuses(
    redis_url: str, prefix: str, partitions: int = 1
) -> tuple[collections.Counter[str], threading.Event, Callable[[], None]]:
    """Count final-status announcements per job (of every one of ``partitions``) in a
    background thread.

    Returns the counts, an event set once the thread has seen its own subscription confirmed,
    and ``drain``: it publishes a sentinel on a job channel and waits until the thread has
    read it, so that every announcement made before the call has been counted (pub/sub keeps
    the order of one subscriber's messages). No sleep decides when listening has caught up.
    """
    counts: collections.Counter[str] = collections.Counter()
    subscribed = threading.Event()
    drained = threading.Event()
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    patterns = [f"{Keys(prefix).partition(part).tag}:job:*" for part in range(partitions)]
    pubsub.psubscribe(*patterns)

    def listen() -> None:
        while not drained.is_set():
            message = pubsub.get_message(timeout=0.1)
            if message is None:
                continue
            if message["type"] == "psubscribe":
                if message["data"] == len(patterns):  # the count of subscriptions so far
                    subscribed.set()
            elif message["type"] == "pmessage":
                if message["data"] == SENTINEL:
                    drained.set()
                elif message["data"] in (b"done", b"failed"):
                    counts[message["channel"].decode().rsplit(":", 1)[1]] += 1
        pubsub.close()
        client.close()

    def drain() -> None:
        publisher = redis.Redis.from_url(redis_url)
        publisher.publish(f"{{{prefix}}}:job:{SENTINEL.decode()}", SENTINEL)
        publisher.close()
        assert drained.wait(30), "the listener never read the sentinel"

    threading.Thread(target=listen, daemon=True).start()
    assert subscribed.wait(10), "the final-status listener never subscribed"
    return counts, subscribed, drain


def submit_until(
    service: Service, stop: threading.Event, accepted: list[str], refused: list[httpx.Response]
) -> None:
    image = encode(photo(200, 150), "jpeg")
    client = httpx.Client(base_url=service.url, timeout=10)
    while not stop.is_set():
        try:
            response = client.post(
                "/api/jobs",
                files={"image": ("steady.jpg", image)},
                data={"operation": "grayscale"},
            )
        except httpx.TransportError:
            continue
        if response.status_code == 202:
            accepted.append(response.json()["id"])
        else:
            refused.append(response)
        time.sleep(0.01)
    client.close()


@dataclass
class Uploads:
    """Uploads sent one after another from a background thread until ``finish``: what was
    accepted (job ids) and what was refused (the responses), for a test to pace itself on."""

    service: Service
    accepted: list[str] = field(default_factory=list)
    refused: list[httpx.Response] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(
            target=submit_until, args=(self.service, self.stop, self.accepted, self.refused)
        )
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join()


def oldest_holder(raw: redis.Redis, streams: list[str], supervisor_pid: int) -> int | None:
    """The longest-lived live worker process of the pool that holds an entry of ``streams``
    now (a job is in flight), or None.

    The oldest, so that kills spread over the pool's slots and test recovery rather than
    the supervisor's back-off for workers that die young.
    """
    alive = worker_pids(supervisor_pid)
    holders = {
        pid_of_consumer(consumer["name"])
        for stream in streams
        for consumer in raw.xpending(stream, "imgstream-workers").get("consumers") or []
        if int(consumer["pending"]) > 0
    }
    live = [pid for pid in holders if pid in alive]
    return max(live, key=process_age) if live else None


def feed_and_kill(
    submit: Callable[[int], str],
    holder: Callable[[], int | None],
    finals: collections.Counter[str],
    *,
    jobs: int,
    kills: int,
    kill_every: int,
) -> tuple[list[str], list[int]]:
    """Chaos paced by progress: jobs go in (``submit(index)`` returns the id) in chunks of
    10 until there are ``jobs`` and ``kills`` workers were SIGKILLed; each kill waits for
    ``kill_every`` more jobs to end and for a worker that holds one (``holder``), so a fast
    machine sees as many kills, each with work in flight, as a slow one. Returns the ids
    and the pids killed."""
    submitted: list[str] = []
    killed: list[int] = []
    ended_at_last_kill = 0
    while len(submitted) < jobs or len(killed) < kills:
        submitted.extend(submit(len(submitted)) for _ in range(10))
        if len(killed) < kills and len(finals) - ended_at_last_kill >= kill_every:
            victim = holder()
            if victim is not None:
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
                ended_at_last_kill = len(finals)
    return submitted, killed
