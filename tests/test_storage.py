"""Local storage: atomic writes, paths built only from valid job ids."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from imgstream.jobs import new_job_id
from imgstream.storage import LocalStorage, StoredResult


def test_original_and_result_round_trip(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    job_id = new_job_id()
    assert storage.save_original(job_id, io.BytesIO(b"abc")) == 3
    assert storage.original_source(job_id).read_bytes() == b"abc"
    path = storage.save_result(job_id, b"xyz", "png")
    assert storage.find_result(job_id, "png") == StoredResult(size=3, path=path)
    assert b"".join(storage.read_result(job_id, "png")) == b"xyz"
    assert storage.find_result(job_id, "jpg") is None
    storage.delete(job_id)
    assert storage.find_result(job_id, "png") is None
    with pytest.raises(FileNotFoundError):
        storage.original_source(job_id)


def test_writing_a_result_twice_leaves_one_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    job_id = new_job_id()
    storage.save_result(job_id, b"first", "webp")
    storage.save_result(job_id, b"second", "webp")
    assert [p.name for p in (tmp_path / "results").iterdir()] == [f"{job_id}.webp"]


@pytest.mark.parametrize("job_id", ["../escape", "/etc/passwd", "a" * 31, ""])
def test_invalid_job_ids_never_become_paths(tmp_path: Path, job_id: str) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(ValueError, match="invalid job id"):
        storage.save_original(job_id, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="invalid job id"):
        storage.save_result(job_id, b"x", "png")


def test_unknown_extensions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extension"):
        LocalStorage(tmp_path).save_result(new_job_id(), b"x", "../png")


def test_failed_copy_leaves_nothing_behind(tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def readinto(self, buffer: object) -> int:
            raise OSError("disk on fire")

    storage = LocalStorage(tmp_path)
    with pytest.raises(OSError, match="disk on fire"):
        storage.save_original(new_job_id(), Broken())  # type: ignore[arg-type]
    assert list((tmp_path / "originals").iterdir()) == []
