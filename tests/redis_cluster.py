"""A real Redis Cluster for tests: ``masters`` redis-server processes in cluster mode on free
loopback ports (each port + 10000, the cluster bus, kept valid), joined with
``redis-cli --cluster create`` and ready once every node reports ``cluster_state:ok``."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.crc import key_slot

from imgstream.keys import Keys
from imgstream.redis_server import RedisServer, free_port


class ClusterError(RuntimeError):
    pass


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is a valid port too."""
    while True:
        port = free_port()
        if port + 10000 < 65536:
            return port


class ClusterNode(RedisServer):
    """One redis-server started with ``--cluster-enabled yes``."""

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.directory / "nodes.conf"),
            "--cluster-node-timeout", "2000",
        ]  # fmt: skip


class RedisCluster:
    """``masters`` masters (and ``replicas`` replicas each), all started and killed by us."""

    def __init__(self, directory: Path, *, masters: int = 3, replicas: int = 0) -> None:
        self.directory = directory
        self.replicas = replicas
        count = masters * (1 + replicas)
        self.nodes = [
            ClusterNode(directory / f"node{index}", port=cluster_port()) for index in range(count)
        ]

    @property
    def url(self) -> str:
        """Any one node: the client discovers the rest."""
        return self.nodes[0].url

    def start(self, timeout: float = 60.0) -> RedisCluster:
        redis_cli = shutil.which("redis-cli")
        if redis_cli is None:
            raise ClusterError("redis-cli is not on PATH")
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                [redis_cli, "--cluster", "create", *addresses,
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
            )  # fmt: skip
            self.wait_until_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_until_ok(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            client = redis.Redis(port=node.port, socket_connect_timeout=1, decode_responses=True)
            try:
                while client.cluster("info").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise ClusterError(f"node {node.port} never reported cluster_state:ok")
                    time.sleep(0.1)
            finally:
                client.close()

    def owner_reply(self, command: str, key: str) -> Any:
        """``command key`` asked of the master owning ``key``'s slot (the others answer
        MOVED), with plain clients: what a test reads is really stored in the cluster."""
        for node in self.nodes:
            client = redis.Redis(port=node.port, socket_connect_timeout=1, decode_responses=True)
            try:
                return getattr(client, command)(key)
            except redis.exceptions.MovedError:
                pass
            finally:
                client.close()
        raise ClusterError(f"no node owns {key}")

    def spread_prefix(self, partitions: int) -> str:
        """A fresh key prefix whose partition tags live on as many masters as can be (all
        different for ``partitions`` <= masters): spread by construction, not by chance."""
        client = redis.Redis(port=self.nodes[0].port, decode_responses=True)
        try:
            ranges = [
                (int(low), int(high), int(node[1]))
                for low, high, node, *_ in client.cluster("slots")
            ]
        finally:
            client.close()
        masters = len({port for _, _, port in ranges})

        def owner(key: str) -> int:
            slot = key_slot(key.encode())
            return next(port for low, high, port in ranges if low <= slot <= high)

        while True:
            keys = Keys(f"p-{uuid.uuid4().hex[:8]}")
            owners = {owner(keys.partition(part).stream) for part in range(partitions)}
            if len(owners) == min(partitions, masters):
                return keys.prefix

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
