"""Several hosts on one machine: Linux network namespaces made (and removed) by a test.

Each host is a namespace with one veth link to a bridge, which sits in a namespace of its
own; every address is in a private /24 and exists only inside these namespaces, so nothing
the hosts say can reach the machine's own network, nor the machine's reach them. A process
is put on a host by being started while the test's thread is inside the host's namespace
(``Network.entered``: ``setns``, and back); sockets opened there stay there, which is also
how the test itself talks to the hosts, from a client host of its own. ``cut`` takes a
host's link down: to the others, the host is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from types import TracebackType

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def unavailable() -> str | None:
    """Why namespaces cannot be made here (then the test skips with it), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) to make network namespaces"
    probe = f"isprobe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def _ip(*arguments: str) -> None:
    subprocess.run(["ip", *arguments], check=True, capture_output=True)


class Network:
    """Hosts named ``names`` on one bridge, each with an address of ``10.77.N.0/24``."""

    def __init__(self, names: list[str]) -> None:
        self.tag = f"is{secrets.token_hex(3)}"
        self.subnet = f"10.77.{secrets.randbelow(250) + 1}"
        self.addresses = {name: f"{self.subnet}.{index + 2}" for index, name in enumerate(names)}
        self.switch = f"{self.tag}-sw"
        self.made: list[str] = []

    def namespace(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def address(self, name: str) -> str:
        return self.addresses[name]

    def __enter__(self) -> Network:
        try:
            self._make()
        except BaseException:
            self.remove()
            raise
        return self

    def _make(self) -> None:
        for namespace in [self.switch, *map(self.namespace, self.addresses)]:
            _ip("netns", "add", namespace)
            self.made.append(namespace)
            _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for index, (name, address) in enumerate(self.addresses.items()):
            port = f"port{index}"
            _ip("-n", self.switch, "link", "add", port, "type", "veth",
                "peer", "name", "eth0", "netns", self.namespace(name))  # fmt: skip
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", self.namespace(name), "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", self.namespace(name), "link", "set", "eth0", "up")

    def cut(self, name: str) -> None:
        """Take ``name``'s link down at the bridge: its connections hang, its packets drop."""
        port = f"port{list(self.addresses).index(name)}"
        _ip("-n", self.switch, "link", "set", port, "down")

    @contextlib.contextmanager
    def entered(self, name: str) -> Iterator[None]:
        """Run the block with this thread inside host ``name``'s namespace."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.namespace(name)}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
            os.close(own)

    def remove(self) -> None:
        """Delete every namespace made (their links go with them)."""
        for namespace in reversed(self.made):
            subprocess.run(["ip", "netns", "del", namespace], check=False, capture_output=True)
        self.made.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()
