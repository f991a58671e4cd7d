"""Originals and results in an S3-compatible bucket (``IMGSTREAM_STORAGE=s3``).

The keys are those of ``LocalStorage``'s files under ``IMGSTREAM_S3_PREFIX``:
``originals/<job id>`` and ``results/<job id>.<ext>``, so a producer in another language
puts the original there before adding the stream entry. Every host of a fleet sees the same
objects and nothing passes through local disk: an upload goes from the API's spooled form
file to the bucket (in parts past ``IMGSTREAM_S3_MULTIPART_THRESHOLD``), a worker reads the
original into memory and writes the result from memory, a download is streamed from the
bucket or redirected to a presigned URL.

The client is boto3, called from worker threads (the ``Storage`` protocol is blocking, as
for files): it follows the whole standard credential chain (environment, profiles, SSO, web
identity, container and instance roles), gives typed error codes (a missing bucket is told
from refused keys), and its transfer manager uploads in parts and aborts a failed multipart
upload. Why not obstore or aiobotocore: docs/storage.md. Every failure of the store comes out
as ``StorageUnavailable`` (a missing object as ``FileNotFoundError``), never as a botocore
exception, so callers handle it like a disk's trouble.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from imgstream.config import Settings
from imgstream.jobs import is_stored_name
from imgstream.output import RESULT_EXTENSIONS, OutputFormat
from imgstream.storage import (
    STORAGE_COUNTS,
    Chunks,
    StorageScan,
    StorageUnavailable,
    StoredFile,
    StoredResult,
    require_name,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

TRANSFER_THREADS = 4
"""Parts of one multipart upload in flight at once (each part is held in memory)."""
SPOOL_BYTES = 1024 * 1024
"""An upload larger than this is spooled to a temporary file before it is sent."""
CHUNK_BYTES = 256 * 1024
"""Piece size of a streamed download."""
DELETE_BATCH = 1000
"""Keys per ``DeleteObjects`` request (the S3 maximum)."""
MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
REFUSED = frozenset(
    {
        "403",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AuthorizationHeaderMalformed",
    }
)
MEDIA_TYPES = {output.extension: output.media_type for output in OutputFormat}


class _KeptOpen:
    """``source`` as s3transfer reads it, minus its ``close`` (s3transfer closes what it
    uploads; the API still reads the upload for its probe, and closes it itself)."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source

    def read(self, size: int = -1) -> bytes:
        return self._source.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._source.seek(offset, whence)

    def tell(self) -> int:
        return self._source.tell()

    def close(self) -> None:
        pass


class S3Storage:
    """The bucket ``settings`` name, through one thread-safe boto3 client per process."""

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self.endpoint = settings.s3_endpoint_url or "AWS S3"
        self.presign_ttl = settings.s3_presign_ttl if settings.s3_presign else 0
        config = Config(
            connect_timeout=settings.s3_timeout,
            read_timeout=settings.s3_timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=settings.s3_max_connections,
            signature_version="s3v4",
            s3={"addressing_style": settings.s3_addressing_style.value},
        )
        try:
            session = boto3.session.Session()
            endpoint = settings.s3_endpoint_url or None
            self.client: S3Client = session.client("s3", endpoint_url=endpoint, config=config)
            # The health check asks once: /readyz must answer within IMGSTREAM_READY_TIMEOUT.
            once = config.merge(Config(retries={"max_attempts": 1, "mode": "standard"}))
            self._probe: S3Client = session.client("s3", endpoint_url=endpoint, config=once)
        except BotoCoreError as exc:  # a broken profile, say: said at start-up, clearly
            raise StorageUnavailable(f"the S3 client cannot be set up: {exc}") from None
        self.transfer = TransferConfig(
            multipart_threshold=settings.s3_multipart_threshold,
            multipart_chunksize=settings.s3_part_bytes,
            max_concurrency=TRANSFER_THREADS,
        )

    def check(self) -> None:
        """One ``HeadBucket``: the bucket exists and these credentials may use it."""
        with self._failures("reach the bucket"):
            self._probe.head_bucket(Bucket=self.bucket)

    def save_original(self, job_id: str, source: BinaryIO) -> int:
        """Stream an upload (from where ``source`` stands) into place; returns its size.
        The object appears whole or not at all."""
        key = self._original(job_id)
        start = source.tell()
        size = source.seek(0, 2) - start
        source.seek(start)
        with self._failures("store the upload"):
            self.client.upload_fileobj(
                cast(BinaryIO, _KeptOpen(source)), self.bucket, key, Config=self.transfer
            )
        return size

    def draft_original(self) -> BinaryIO:
        """A spool for an upload as it arrives (in memory while small), uploaded by
        ``commit_original``: a bucket has no place to write a file into bit by bit."""
        return cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES))

    def commit_original(self, draft: BinaryIO, name: str) -> int:
        draft.seek(0)
        return self.save_original(name, draft)

    def original_source(self, job_id: str) -> bytes:
        """The original, read into memory (it is at most ``IMGSTREAM_MAX_UPLOAD_BYTES``)."""
        with self._failures("read the original"):
            reply = self.client.get_object(Bucket=self.bucket, Key=self._original(job_id))
            with reply["Body"] as body:
                return body.read()

    def has_original(self, name: str) -> bool:
        try:
            with self._failures("look up an original"):
                self.client.head_object(Bucket=self.bucket, Key=self._original(name))
        except FileNotFoundError:
            return False
        return True

    def save_result(self, job_id: str, data: bytes, extension: str) -> str:
        key = self._result(job_id, extension)
        with self._failures("store the result"):
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=MEDIA_TYPES[extension]
            )
        return key

    def find_result(self, job_id: str, extension: str) -> StoredResult | None:
        """The result's size, with a presigned URL (``IMGSTREAM_S3_PRESIGN``) or a reader."""
        key = self._result(job_id, extension)
        try:
            with self._failures("look up the result"):
                head = self.client.head_object(Bucket=self.bucket, Key=key)
        except FileNotFoundError:
            return None
        size = head["ContentLength"]
        if self.presign_ttl:
            with self._failures("sign a download URL"):
                url = self.client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": key},
                    ExpiresIn=self.presign_ttl,
                )
            return StoredResult(size=size, url=url)
        return StoredResult(size=size, open=partial(self._read, key))

    def read_result(self, job_id: str, extension: str) -> Chunks:
        return self._read(self._result(job_id, extension), None)

    def _read(self, key: str, byte_range: tuple[int, int] | None) -> Chunks:
        with self._failures("read the result"):
            if byte_range is None:
                reply = self.client.get_object(Bucket=self.bucket, Key=key)
            else:
                first, last = byte_range
                reply = self.client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes={first}-{last}"
                )
            body = reply["Body"]
        try:
            with self._failures("read the result"):
                yield from body.iter_chunks(CHUNK_BYTES)
        finally:
            body.close()

    def delete(self, job_id: str) -> None:
        self._delete_keys(self._keys_of(job_id))

    def delete_job_files(self, job_id: str) -> tuple[int, int]:
        """Delete a job's original and results; returns how many objects and their bytes."""
        wanted = set(self._keys_of(job_id))
        found: dict[str, int] = {}
        for prefix in (self._original(job_id), f"{self.prefix}results/{job_id}."):
            for key, size, _ in self._list(prefix):
                if key in wanted:
                    found[key] = size
        self._delete_keys(list(found))
        return len(found), sum(found.values())

    def remove_files(self, files: list[StoredFile]) -> tuple[int, int]:
        self._delete_keys([stored.name for stored in files])
        return len(files), sum(stored.size for stored in files)

    def free_bytes(self) -> int:
        """A bucket has no free-space figure: never "full" (the store says when it is)."""
        return sys.maxsize

    def remove_dead_temporaries(self) -> int:
        """Nothing of an image is written to local disk; abandoned multipart uploads are
        aborted by ``scan``."""
        return 0

    def scan(self, temporary_age: float, orphan_age: float) -> StorageScan:
        """Count the objects, abort multipart uploads older than ``temporary_age`` (what a
        killed API left), and list objects older than ``orphan_age`` by job."""
        scan = StorageScan(usage=dict.fromkeys(STORAGE_COUNTS, 0))
        now = time.time()
        for kind in ("originals", "results"):
            for key, size, modified in self._list(f"{self.prefix}{kind}/"):
                name = key.rsplit("/", 1)[-1]
                job_id = name if kind == "originals" else name.split(".")[0]
                if not is_stored_name(job_id):
                    continue  # not ours: never touched, never counted
                scan.usage[kind] += 1
                scan.usage[f"{kind}_bytes"] += size
                if now - modified > orphan_age:
                    scan.old.setdefault(job_id, []).append(StoredFile(key, kind, size))
        for key, upload_id, started in self._multipart_uploads():
            if now - started > temporary_age:
                with self._failures("abort an abandoned upload"):
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload_id
                    )
                scan.temporaries_removed += 1
            else:
                scan.usage["temporary"] += 1
        return scan

    def _list(self, prefix: str) -> Iterator[tuple[str, int, float]]:
        """(key, size, modified as Unix time) of each object under ``prefix``."""
        pages = self.client.get_paginator("list_objects_v2")
        with self._failures("list the bucket"):
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"], item["Size"], item["LastModified"].timestamp()

    def _multipart_uploads(self) -> Iterator[tuple[str, str, float]]:
        pages = self.client.get_paginator("list_multipart_uploads")
        with self._failures("list unfinished uploads"):
            for page in pages.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}originals/"):
                for upload in page.get("Uploads", []):
                    yield upload["Key"], upload["UploadId"], upload["Initiated"].timestamp()

    def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            with self._failures("delete objects"):
                reply = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
            errors = reply.get("Errors", [])
            if errors:
                first = errors[0]
                raise StorageUnavailable(
                    f"S3 refused to delete {len(errors)} objects of bucket {self.bucket}: "
                    f"{first.get('Code', '?')} {first.get('Message', '')}".rstrip()
                )

    def _keys_of(self, job_id: str) -> list[str]:
        results = [self._result(job_id, ext) for ext in sorted(RESULT_EXTENSIONS)]
        return [self._original(job_id), *results]

    def _original(self, job_id: str) -> str:
        require_name(job_id)
        return f"{self.prefix}originals/{job_id}"

    def _result(self, job_id: str, extension: str) -> str:
        require_name(job_id)
        if extension not in RESULT_EXTENSIONS:
            raise ValueError(f"unknown result extension {extension!r}")
        return f"{self.prefix}results/{job_id}.{extension}"

    @contextmanager
    def _failures(self, action: str) -> Iterator[None]:
        """botocore's exceptions as ours: a missing object is ``FileNotFoundError``, any
        other trouble ``StorageUnavailable`` with what to check."""
        try:
            yield
        except ClientError as exc:
            raise self._translate(action, exc.response) from None
        except BotoCoreError as exc:
            raise StorageUnavailable(
                f"could not {action}: S3 at {self.endpoint} is unavailable ({exc})"
            ) from None

    def _translate(self, action: str, response: Any) -> OSError:
        error = response.get("Error", {})
        code = str(error.get("Code", ""))
        detail = f"{code} {error.get('Message', '')}".strip()
        if code == "NoSuchBucket" or (code in MISSING and action == "reach the bucket"):
            return StorageUnavailable(
                f"could not {action}: the bucket {self.bucket!r} does not exist at "
                f"{self.endpoint} (IMGSTREAM_S3_BUCKET; imgstream never creates it)"
            )
        if code in MISSING:
            return FileNotFoundError(f"no such object in bucket {self.bucket!r}")
        if code in REFUSED:
            return StorageUnavailable(
                f"could not {action}: S3 at {self.endpoint} refused the credentials for "
                f"bucket {self.bucket!r} ({detail}); check AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY, the profile or the role, and the bucket policy"
            )
        return StorageUnavailable(f"could not {action}: S3 at {self.endpoint} said {detail}")
