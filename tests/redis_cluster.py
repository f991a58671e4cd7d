"""A real Redis Cluster for tests: ``masters`` redis-server processes in cluster mode on free
loopback ports (each port + 10000, the cluster bus, kept valid), with ``replicas`` replicas
each, joined with ``redis-cli --cluster create`` and ready once every node reports
``cluster_state:ok``. A master can be SIGKILLed and its replica's promotion awaited."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.crc import key_slot

from imgstream.keys import Keys
from imgstream.redis_server import RedisServer, RedisServerError, find_redis_binary, free_port


class ClusterError(RuntimeError):
    pass


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is a valid port too."""
    while True:
        port = free_port()
        if port + 10000 < 65536:
            return port


class ClusterNode(RedisServer):
    """One redis-server started with ``--cluster-enabled yes``; after ``node_timeout_ms``
    without an answer its peers count it failed (and promote a replica of a master)."""

    def __init__(self, directory: Path, *, port: int, node_timeout_ms: int = 2000) -> None:
        super().__init__(directory, port=port)
        self.node_timeout_ms = node_timeout_ms

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.directory / "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
        ]  # fmt: skip

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=1, decode_responses=True)

    def masters(self) -> dict[int, set[int]]:
        """This node's view: the port of each master it sees alive, with its slots."""
        owners: dict[int, set[int]] = {}
        with self.client() as client:
            nodes: dict[str, dict[str, Any]] = client.cluster("nodes")
        for address, node in nodes.items():
            flags = node["flags"].split(",")
            if "master" not in flags or "fail" in flags or "fail?" in flags:
                continue
            slots = owners.setdefault(int(address.split("@")[0].rsplit(":", 1)[1]), set())
            for first, last in (span[:2] for span in node["slots"] if len(span) >= 2):
                slots.update(range(int(first), int(last) + 1))
            for span in node["slots"]:
                if len(span) == 1:
                    slots.add(int(span[0]))
        return owners


def start_on_a_free_port(node: ClusterNode, timeout: float, attempts: int = 5) -> None:
    """Start ``node``; when another process took its port (or its bus port) between
    ``cluster_port`` and the bind, as concurrent test runs on one machine can, on another.
    ``timeout``: a loaded machine may take more than a few seconds to answer."""
    for attempt in range(attempts):
        try:
            node.start(timeout)
            return
        except RedisServerError:
            log = node.directory / "redis.log"
            if attempt == attempts - 1 or "Address already in use" not in log.read_text():
                raise
            node.port = cluster_port()


class RedisCluster:
    """``masters`` masters (and ``replicas`` replicas each), all started and killed by us."""

    def __init__(
        self, directory: Path, *, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 2000
    ) -> None:
        self.directory = directory
        self.replicas = replicas
        count = masters * (1 + replicas)
        self.nodes = [
            ClusterNode(
                directory / f"node{index}", port=cluster_port(), node_timeout_ms=node_timeout_ms
            )
            for index in range(count)
        ]

    @property
    def url(self) -> str:
        """Any one node: the client discovers the rest."""
        return self.nodes[0].url

    def start(self, timeout: float = 60.0) -> RedisCluster:
        try:
            redis_cli = find_redis_binary("redis-cli")
        except RedisServerError as exc:
            raise ClusterError(str(exc)) from None
        try:
            for node in self.nodes:
                start_on_a_free_port(node, timeout)
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                [redis_cli, "--cluster", "create", *addresses,
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
            )  # fmt: skip
            self.wait_until_ok(timeout)
            self.wait_for_replicas(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_until_ok(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if not node.alive:
                continue
            with node.client() as client:
                while client.cluster("info").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise ClusterError(f"node {node.port} never reported cluster_state:ok")
                    time.sleep(0.1)

    def wait_for_replicas(self, timeout: float) -> None:
        """Wait until every live replica has synced with its master (until then a ``WAIT``
        hears from no one)."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if not node.alive:
                continue
            with node.client() as client:
                while (info := client.info("replication"))["role"] != "master":
                    if info.get("master_link_status") == "up":
                        break
                    if time.monotonic() > deadline:
                        raise ClusterError(f"replica {node.port} never synced with its master")
                    time.sleep(0.05)

    def master_of(self, key: str) -> ClusterNode:
        """The live master that owns ``key``'s slot now."""
        live = next(node for node in self.nodes if node.alive)
        with live.client() as client:
            slot = int(client.cluster("keyslot", key))
        for port, slots in live.masters().items():
            if slot in slots:
                return next(node for node in self.nodes if node.port == port)
        raise ClusterError(f"no live master owns slot {slot}")

    def wait_for_promotion(self, dead: ClusterNode, slots: set[int], timeout: float) -> None:
        """Wait until every live node sees ``slots`` (``dead``'s) owned by another live
        master and reports ``cluster_state:ok``: the replica was promoted by the vote that
        follows ``dead`` missing the node timeout, nothing else (no ``CLUSTER FAILOVER``)."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if not node.alive:
                continue
            while True:
                owners = node.masters()
                owned = set().union(*(s for port, s in owners.items() if port != dead.port))
                if slots <= owned:
                    break
                if time.monotonic() > deadline:
                    raise ClusterError(f"node {node.port} never saw {dead.port}'s slots move")
                time.sleep(0.05)
        self.wait_until_ok(max(1.0, deadline - time.monotonic()))

    def owner_reply(self, command: str, key: str) -> Any:
        """``command key`` asked of the master owning ``key``'s slot (the others answer
        MOVED), with plain clients: what a test reads is really stored in the cluster."""
        for node in self.nodes:
            if not node.alive:
                continue
            with node.client() as client:
                try:
                    return getattr(client, command)(key)
                except (redis.exceptions.MovedError, redis.exceptions.ReadOnlyError):
                    pass
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
