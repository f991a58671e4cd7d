"""What a killed process leaves in the data directory goes at start-up and within minutes
(issue 11): a temporary whose writer is dead, an original no job names. Live writers' files
stay. Real processes are killed with SIGKILL; file ages are set, as a clock would, with utime.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from imgstream.jobs import new_job_id
from imgstream.redis_server import RedisServer
from imgstream.storage import LocalStorage, temporary_for

from service import Service, service_env

WRITER = """
import sys
from pathlib import Path
from imgstream.storage import LocalStorage, temporary_for
storage = LocalStorage(Path(sys.argv[1]))
temporary = temporary_for(storage.originals / sys.argv[2])
temporary.write_bytes(b"half an upload" * 1000)
print(temporary, flush=True)
sys.stdin.read()  # a writer that never finishes: it is killed
"""


def killed_writer(data_dir: Path) -> Path:
    """A temporary left by a real process, SIGKILLed while writing it."""
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(data_dir), new_job_id()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as writer:
        assert writer.stdout is not None
        path = Path(writer.stdout.readline().decode().strip())
        writer.send_signal(signal.SIGKILL)
    return path


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_start_up_and_gc_clean_crash_leftovers(redis_server: RedisServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    storage = LocalStorage(data_dir)
    dead = killed_writer(data_dir)
    live = temporary_for(storage.originals / new_job_id())  # this test process is its writer
    live.write_bytes(b"still being written")
    for path in (dead, live):
        age(path, 60)

    service = Service.launch(
        redis_server.url, data_dir, f"crash-{uuid.uuid4().hex[:8]}", concurrency=1
    )
    try:
        assert not dead.exists(), "the API left a dead writer's temporary at start-up"
        assert live.exists()
        assert "temporary files left by a crashed process" in service.log.read_text()

        orphan = storage.originals / new_job_id()  # stored, then the API died before queueing
        orphan.write_bytes(b"an original no job names")
        age(orphan, 120)
        later = killed_writer(data_dir)
        age(later, 60)
        env = service_env(
            service.env["REDIS_URL"], data_dir, service.prefix, IMGSTREAM_ORPHAN_AGE="60"
        )
        swept = subprocess.run(
            [sys.executable, "-m", "imgstream", "gc"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert swept.returncode == 0, swept.stderr
        assert not orphan.exists() and not later.exists() and live.exists()
        stats = service.http.get("/api/stats").json()["storage"]
        assert stats["temporary"] == 1 and stats["temporary_bytes"] == live.stat().st_size
    finally:
        service.close()
