"""Virtual environments for the systems imgstream is compared with, one per peer.

Each lives under ``bench/.venvs/<name>`` and is reused while its requirement list is
unchanged (a stamp file holds it). Every queue peer gets the same pyvips and pydantic
versions as imgstream's own environment, plus a ``.pth`` file naming this checkout's
``src``, so its task calls exactly the same ``imgstream.imaging.render`` as imgstream does.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENVS = BENCH / ".venvs"


def _same_as_imgstream(*names: str) -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in names]


_IMAGING = _same_as_imgstream("pyvips", "pyvips-binary", "pydantic", "simplejpeg", "numpy")

PEERS: dict[str, list[str]] = {
    # Engine duel: every library in one environment, each measured in its own process.
    "engines": ["pillow", "opencv-python-headless", *_IMAGING],
    "thumbor": ["thumbor"],
    "celery": ["celery[redis]", *_IMAGING],
    "rq": ["rq", *_IMAGING],
    "arq": ["arq", *_IMAGING],
    "saq": ["saq[redis]", *_IMAGING],
    "dramatiq": ["dramatiq[redis]", *_IMAGING],
}


def python(name: str) -> Path:
    return VENVS / name / "bin" / "python"


def bin_path(name: str, program: str) -> Path:
    return VENVS / name / "bin" / program


def ensure(name: str, log: Path) -> Path:
    """Create or reuse the environment ``name``; returns its interpreter."""
    requirements = PEERS[name]
    digest = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:16]
    venv = VENVS / name
    stamp = venv / f".bench-{digest}"
    if stamp.exists():
        return python(name)
    with log.open("ab") as sink:
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            check=True,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        subprocess.run(
            [str(python(name)), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
            check=True,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        subprocess.run(
            [str(python(name)), "-m", "pip", "install", "--quiet", *requirements],
            check=True,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    site = subprocess.run(
        [str(python(name)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The checkout's src and bench directories, so peers import imgstream.imaging and runners.
    (Path(site) / "imgstream-bench.pth").write_text(f"{ROOT / 'src'}\n{BENCH}\n")
    stamp.touch()
    return python(name)


def ensure_all(names: list[str], log: Path) -> dict[str, Path | Exception]:
    """Install what is missing, a few at a time (downloads overlap, the CPU is not the limit)."""
    VENVS.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    outcome: dict[str, Path | Exception] = {}

    def one(name: str) -> None:
        try:
            outcome[name] = ensure(name, log)
        except (OSError, subprocess.CalledProcessError) as exc:
            outcome[name] = exc

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, names))
    return outcome


if __name__ == "__main__":
    wanted = sys.argv[1:] or list(PEERS)
    for peer, result in ensure_all(wanted, BENCH / "results" / "install.log").items():
        print(f"{peer}: {result}")
