"""The data lake: where raw records are kept forever, byte for byte.

``DataLake`` is a flat store of immutable objects under relative keys, with two
backends: S3 (any endpoint: AWS, MinIO, Ceph, moto) and a local directory.
``put`` returns once the object is durable (S3 acknowledged the upload; the
file, its name and its directory are fsynced), and an object appears whole or
not at all (S3's PUT; a temporary name renamed into place), so a reader never
sees half an object. ``open_lake`` picks the backend from the URL
(``s3://bucket/prefix`` or ``file:///dir``).
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from cardflow.errors import ConfigError, LakeError, LakeUnavailable

MULTIPART_THRESHOLD = 16 * 1024 * 1024  # bytes above which S3 uploads go in parts


@dataclass(frozen=True)
class LakeObject:
    key: str  # relative to the lake's root
    size: int


class DataLake:
    """A store of immutable objects. Keys are relative, '/'-separated, without a leading '/'."""

    url: str

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, durably and atomically (replacing an object of that key)."""
        raise NotImplementedError

    def get(self, key: str) -> bytes:
        raise NotImplementedError

    def head(self, key: str, length: int) -> bytes | None:
        """The first ``length`` bytes of the object (fewer if it is shorter); None if it does not exist."""
        raise NotImplementedError

    def list(self, prefix: str = "") -> Iterator[LakeObject]:
        """Objects whose key starts with ``prefix``, in key order."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise LakeError (what is wrong, what to do) unless objects can be written here."""
        raise NotImplementedError


class LocalLake(DataLake):
    """A directory: each object a file, written under a temporary name, fsynced and renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.resolve().as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise LakeError(f"lake key {key!r} leaves the lake's directory {self.root}")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            _fsync_dir(path.parent)
        except OSError as exc:
            raise LakeUnavailable(f"cannot write {path}: {exc.strerror or exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise LakeError(f"{self.url}/{key} does not exist") from exc

    def head(self, key: str, length: int) -> bytes | None:
        try:
            with open(self._path(key), "rb") as f:
                return f.read(length)
        except FileNotFoundError:
            return None

    def list(self, prefix: str = "") -> Iterator[LakeObject]:
        if not self.root.is_dir():
            return
        # Walk only the directories the prefix can be in.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base
        if not start.is_dir():
            return
        found = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for name in filenames:
                if name.startswith(".tmp-"):
                    continue  # an upload in progress, or one a crash left behind
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(LakeObject(key, full.stat().st_size))
        yield from sorted(found, key=lambda o: o.key)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LakeError(f"cannot create the lake directory {self.root}: {exc.strerror}; "
                            "set CARDFLOW_LAKE_URL to a writable file:// directory") from exc
        if not os.access(self.root, os.W_OK):
            raise LakeError(f"the lake directory {self.root} is not writable; set CARDFLOW_LAKE_URL")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3Lake(DataLake):
    """A bucket and prefix on any S3 endpoint, through boto3 (credentials from the usual AWS
    chain: environment, shared files, instance or pod roles)."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None,
                 region: str | None = None, multipart_threshold: int = MULTIPART_THRESHOLD) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._client = boto3.client(
            "s3", endpoint_url=endpoint_url or None, region_name=region or None,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5,
                          read_timeout=30))
        self._transfer = TransferConfig(multipart_threshold=multipart_threshold,
                                        multipart_chunksize=max(5 * 1024 * 1024, multipart_threshold // 2),
                                        use_threads=False)
        self._lock = threading.Lock()

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        with self._errors(key):
            self._client.upload_fileobj(io.BytesIO(data), self.bucket, self._key(key), Config=self._transfer)

    def get(self, key: str) -> bytes:
        with self._errors(key):
            body: bytes = self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
            return body

    def head(self, key: str, length: int) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            with self._errors(key):
                data: bytes = self._client.get_object(Bucket=self.bucket, Key=self._key(key),
                                                      Range=f"bytes=0-{length - 1}")["Body"].read()
                return data
        except LakeError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and _code(cause) in ("NoSuchKey", "404", "InvalidRange"):
                return None if _code(cause) != "InvalidRange" else b""
            raise

    def list(self, prefix: str = "") -> Iterator[LakeObject]:
        skip = len(self.prefix) + 1 if self.prefix else 0
        with self._errors(prefix):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix))
            for page in pages:
                for item in page.get("Contents", ()):
                    yield LakeObject(item["Key"][skip:], int(item["Size"]))

    def check(self) -> None:
        with self._errors(""):
            self._client.head_bucket(Bucket=self.bucket)

    def _errors(self, key: str) -> Any:
        return _S3Errors(self, key)


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class _S3Errors:
    """boto3's exceptions as LakeError (a mistake: say what to fix) or LakeUnavailable (retry)."""

    def __init__(self, lake: S3Lake, key: str) -> None:
        self.lake, self.key = lake, key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        if exc is None or isinstance(exc, LakeError):
            return
        where = f"{self.lake.url}/{self.key}".rstrip("/")
        no_bucket = LakeError(f"bucket {self.lake.bucket!r} does not exist: create it, or set "
                              "CARDFLOW_LAKE_URL to an existing bucket")
        if isinstance(exc, NoCredentialsError):
            raise LakeError(f"no AWS credentials for {self.lake.url}: set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, a profile (AWS_PROFILE) or an instance/pod role") from exc
        if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError):
            raise LakeUnavailable(f"cannot reach the S3 endpoint for {where}: {exc}") from exc
        if isinstance(exc, S3UploadFailedError):
            text = str(exc)
            if "NoSuchBucket" in text:
                raise no_bucket from exc
            raise LakeUnavailable(f"uploading {where} failed: {text}") from exc
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code == "NoSuchBucket" or (code == "404" and not self.key):  # head_bucket says 404
                raise no_bucket from exc
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise LakeError(f"access to {where} was refused ({code}): check the credentials and the "
                                "bucket policy") from exc
            if code in ("NoSuchKey", "404"):
                raise LakeError(f"{where} does not exist") from exc
            if code.startswith("5") or code in ("SlowDown", "InternalError", "ServiceUnavailable"):
                raise LakeUnavailable(f"S3 answered {code} for {where}") from exc
            raise LakeError(f"S3 refused {where}: {code} {exc}") from exc


def open_lake(url: str, endpoint_url: str | None = None, region: str | None = None,
              multipart_threshold: int = MULTIPART_THRESHOLD) -> DataLake:
    """The lake at ``url``: ``s3://bucket[/prefix]`` or ``file:///dir`` (or a plain path)."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"lake URL {url!r} names no bucket: use s3://bucket/prefix")
        return S3Lake(parsed.netloc, parsed.path, endpoint_url, region, multipart_threshold)
    if parsed.scheme == "file":
        return LocalLake(Path(unquote(parsed.path)))
    if parsed.scheme == "" and url:
        return LocalLake(Path(url))
    raise ConfigError(f"lake URL {url!r}: unknown scheme {parsed.scheme!r}; use s3://bucket/prefix or "
                      "file:///directory")
