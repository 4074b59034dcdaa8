"""Where files live: local paths and ``s3://`` URIs, both through pyarrow's filesystem layer.

One resolver, :func:`filesystem_for`, serves the three places the runner touches S3: the input
(``[job] input``), the batch lane's shards and outputs (``[batch] s3_uri``) and the results upload
(``[output] s3_uri``). Credentials come from the usual AWS chain (environment, ``~/.aws``, profile,
instance role), which Arrow's S3 client reads itself; nothing here handles a secret.

The endpoint can be overridden with the AWS SDK's standard variables, ``AWS_ENDPOINT_URL_S3`` first,
then ``AWS_ENDPOINT_URL``, which is how the tests point S3 at a local server and how people use MinIO
or a VPC endpoint. ``FileSystem.from_uri`` does not read them, so an override builds the
``S3FileSystem`` explicitly (path-style addressing, the scheme the URL says, the region from
``AWS_REGION``); without one, ``from_uri`` finds the bucket's region by itself.
"""

from __future__ import annotations

import os
import posixpath
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from runner.errors import SinkError

S3_SCHEME = "s3://"
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
"""Checked in this order, as the AWS SDKs do (service-specific first)."""
DEFAULT_REGION = "us-east-1"
ArrowError = (OSError, pa.ArrowException)
"""What pyarrow raises for I/O trouble, for ``except ArrowError``."""


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def s3_endpoint_url() -> str | None:
    """The S3 endpoint override from the environment, if any."""
    for name in ENDPOINT_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``; raises ``ValueError`` without a bucket."""
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    return bucket, key


def join(uri: str, *names: str) -> str:
    """``join("s3://b/p/", "x", "y.jsonl")`` -> ``s3://b/p/x/y.jsonl`` (one slash between parts)."""
    out = uri.rstrip("/")
    for name in names:
        out = f"{out}/{name.strip('/')}"
    return out


def s3_filesystem(endpoint_url: str | None = None, region: str | None = None) -> pafs.S3FileSystem:
    """An ``S3FileSystem`` for ``endpoint_url`` (default: the environment's override, else AWS)."""
    endpoint_url = endpoint_url or s3_endpoint_url()
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    if not endpoint_url:
        return pafs.S3FileSystem(region=region)
    parts = urllib.parse.urlsplit(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")
    return pafs.S3FileSystem(
        endpoint_override=parts.netloc + parts.path.rstrip("/"),
        scheme=parts.scheme or "https",
        region=region,
        force_virtual_addressing=False,
    )


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of ``uri`` and the path it knows it by (``bucket/key`` for S3).

    Local paths (relative ones against the working directory) use the local filesystem. Raises
    ``OSError`` / ``pyarrow.ArrowException`` as pyarrow does, for the caller to put in its own words.
    """
    if is_s3(uri):
        bucket, key = split_s3(uri)
        if s3_endpoint_url() is not None:
            return s3_filesystem(), posixpath.join(bucket, key) if key else bucket
        return _from_uri(uri)
    if "://" in uri:
        return _from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def _from_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, str(path)


def upload_file(local: str | os.PathLike[str], uri: str) -> int:
    """Copy a local file to ``uri`` (streamed, never whole in memory); returns the bytes copied."""
    fs, path = filesystem_for(uri)
    copied = 0
    with open(local, "rb") as src, fs.open_output_stream(path) as dst:
        while chunk := src.read(8 * 1024 * 1024):
            dst.write(chunk)
            copied += len(chunk)
    return copied


def read_bytes(uri: str) -> bytes | None:
    """The whole object at ``uri``, or ``None`` when there is none (small files: manifests)."""
    fs, path = filesystem_for(uri)
    try:
        with fs.open_input_stream(path) as f:
            data: bytes = f.read()
    except FileNotFoundError:
        return None
    return data


def exists(uri: str) -> bool:
    fs, path = filesystem_for(uri)
    return bool(fs.get_file_info(path).type != pafs.FileType.NotFound)


def iter_lines(uri: str, *, chunk_bytes: int = 4 * 1024 * 1024) -> Iterator[bytes]:
    """The lines of the object at ``uri``, without their newline, streamed in ``chunk_bytes`` reads.

    Memory holds one chunk and one line, so a multi-gigabyte batch output is read in flat memory.
    Raises ``FileNotFoundError`` when there is no such object.
    """
    fs, path = filesystem_for(uri)
    with fs.open_input_stream(path) as f:
        rest = b""
        while chunk := f.read(chunk_bytes):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                if line.strip():
                    yield line
        if rest.strip():
            yield rest


def upload_results(results: Path, uri: str) -> str:
    """Copy a job's ``results.parquet`` to ``{uri}/results.parquet`` (``[output] s3_uri``); returns the URI.

    The job directory stays the source of truth; this is a copy for the people downstream. A failed
    upload is a :class:`SinkError` that says so: the results are safe locally, and a rerun of the
    same command (nothing left to run) uploads them again.
    """
    target = join(uri, results.name)
    if not results.exists():
        return target
    try:
        upload_file(results, target)
    except (*ArrowError, ValueError) as exc:
        raise SinkError(
            f"cannot upload {results} to {target} ({exc}); the results are complete locally, "
            "rerun the same command to upload again"
        ) from exc
    return target
