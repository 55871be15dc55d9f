"""Mirror an ``s3://bucket/prefix`` into a local cache directory, verifying every download.

Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
in the environment, an AWS profile, an instance role), never from the configuration, and they
are never logged or written anywhere.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from ..errors import ConfigError
from ..files import cache_dir

logger = logging.getLogger(__name__)

# Tries per S3 request, the first one included (the first try and 5 retries); the environment
# variable AWS_MAX_ATTEMPTS (boto's own, same meaning) overrides it. Between tries, botocore's
# "standard" mode waits a jittered exponential back-off, rand(0, 1) * min(2 ** n, 20) seconds:
# at most 1 + 2 + 4 + 8 + 16 = 31 s in all for one request with 6 tries, ~3 s with 3.
MAX_ATTEMPTS = 6
RETRY_MODE = "standard"
PART_SUFFIX = ".part"  # unfinished downloads; hidden and removed by the next sync
CREDENTIAL_ERRORS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "403",
}
CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary "
    "credentials) in the environment, or use an AWS profile; credentials are never read from "
    "the config"
)


@dataclass(frozen=True)
class S3Url:
    """A parsed ``s3://bucket/prefix``; ``prefix`` has no leading or trailing slash."""

    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def key_prefix(self) -> str:
        """The listing prefix: a trailing slash, so ``data`` does not also match ``data2/``."""
        return f"{self.prefix}/" if self.prefix else ""


@dataclass(frozen=True)
class _Object:
    key: str
    rel: str  # path below the prefix, POSIX style
    size: int
    etag: str


def is_s3_url(path: str) -> bool:
    return path.startswith("s3://")


def parse_url(url: str) -> S3Url:
    """Split ``s3://bucket/prefix``; a ConfigError names the URL when it is malformed."""
    if not is_s3_url(url):
        raise ConfigError(f"data.path: {url!r} is not an s3://bucket/prefix URL")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-]*", bucket):
        raise ConfigError(f"data.path: {url!r}: {bucket!r} is not a valid S3 bucket name")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ConfigError(f"data.path: {url!r}: the prefix may not contain '.', '..' or '//'")
    return S3Url(bucket, prefix)


def cache_root() -> Path:
    """Where prefixes are mirrored: ``$DYN_ADAPTER_CACHE/s3`` (default ``~/.cache/dyn-adapter``)."""
    return cache_dir() / "s3"


def environment_endpoint() -> str | None:
    """The endpoint the AWS SDKs read from the environment: ``$AWS_ENDPOINT_URL_S3``, then
    ``$AWS_ENDPOINT_URL`` (botocore uses them when no endpoint is passed)."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def default_cache_dir(url: S3Url, endpoint_url: str | None) -> Path:
    """One directory per endpoint, bucket and prefix, so sources never mix."""
    host = urlsplit(endpoint_url).netloc if endpoint_url else "aws"
    host = re.sub(r"[^A-Za-z0-9.\-]", "_", host)
    return cache_root() / host / url.bucket / url.prefix


def download_prefix(
    url: str,
    endpoint_url: str | None = None,
    dest: str | os.PathLike[str] | None = None,
    workers: int = 8,
) -> Path:
    """Mirror every object under ``url`` into ``dest`` and return ``dest``.

    Files already in ``dest`` with the object's size and MD5 are kept; everything else is
    downloaded to a temporary file, checked against the object's size and (for non-multipart
    uploads) its ETag MD5, then renamed into place. Local files that are no longer in the
    bucket are removed, so ``dest`` always equals the prefix.

    Args:
        url: ``s3://bucket/prefix``.
        endpoint_url: An S3-compatible endpoint (MinIO, SeaweedFS, ...); None: the
            environment's (:func:`environment_endpoint`), else AWS.
        dest: The local directory; default :func:`default_cache_dir`.
        workers: Parallel downloads.

    Raises:
        ConfigError: Missing credentials, refused credentials, a missing bucket, an empty
            prefix, an unreachable endpoint, an object key escaping the prefix, or a download
            that does not match its object.
    """
    from botocore.exceptions import BotoCoreError, ClientError  # boto3 only where S3 is used

    loc = parse_url(url)
    endpoint_url = endpoint_url or environment_endpoint()
    target = Path(dest) if dest is not None else default_cache_dir(loc, endpoint_url)
    where = endpoint_url or "AWS S3"
    try:
        client = _client(endpoint_url)
        objects = _list_objects(client, loc)
        if not objects:
            raise ConfigError(
                f"{loc}: no objects under this prefix (at {where}); "
                "check data.path and the endpoint (data.s3_endpoint_url or $AWS_ENDPOINT_URL_S3)"
            )
        todo = [o for o in objects if not _is_current(target / o.rel, o)]
        logger.info(
            "%s (%s): %d objects, %d to download to %s", loc, where, len(objects), len(todo), target
        )
        _download_all(client, loc, todo, target, workers)
    except (ClientError, BotoCoreError) as e:
        raise _explain(e, loc, endpoint_url) from None
    _remove_stale(target, {o.rel for o in objects})
    return target


def _client(endpoint_url: str | None) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    if session.get_credentials() is None:
        raise ConfigError(f"no S3 credentials found: {CREDENTIALS_HINT}")
    config = Config(retries={"total_max_attempts": max_attempts(), "mode": RETRY_MODE})
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def max_attempts() -> int:
    """Tries per request: ``$AWS_MAX_ATTEMPTS`` if set, else :data:`MAX_ATTEMPTS`."""
    raw = os.environ.get("AWS_MAX_ATTEMPTS", "").strip()
    if not raw:
        return MAX_ATTEMPTS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"AWS_MAX_ATTEMPTS: {raw!r} is not a whole number >= 1")
    return value


def _explain(e: Exception, loc: S3Url, endpoint_url: str | None) -> ConfigError:
    """A ConfigError saying what went wrong; boto's messages never contain the secret key."""
    from botocore.exceptions import (
        ClientError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )
    from botocore.exceptions import ConnectionError as EndpointError

    where = endpoint_url or "AWS S3"
    if isinstance(e, NoCredentialsError | PartialCredentialsError):
        return ConfigError(f"no usable S3 credentials ({e}): {CREDENTIALS_HINT}")
    if isinstance(e, ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code == "NoSuchBucket":
            return ConfigError(
                f"{loc}: bucket {loc.bucket!r} does not exist at {where}; "
                "check data.path and the endpoint (data.s3_endpoint_url or $AWS_ENDPOINT_URL_S3)"
            )
        if code in CREDENTIAL_ERRORS:
            return ConfigError(
                f"{loc}: {where} refused the credentials ({code}); check that "
                f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are right and may read this bucket"
            )
        return ConfigError(f"{loc}: S3 error at {where}: {e}")
    if isinstance(e, EndpointError | HTTPClientError):  # unreachable, timed out, cut off
        return ConfigError(
            f"{loc}: cannot reach the S3 endpoint {where} (gave up after {max_attempts()} tries "
            f"per request; AWS_MAX_ATTEMPTS sets how many): {e}"
        )
    return ConfigError(f"{loc}: cannot use the S3 endpoint {where}: {e}")


def _list_objects(client: Any, loc: S3Url) -> list[_Object]:
    objects = []
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=loc.bucket, Prefix=loc.key_prefix
    )
    for page in pages:
        for item in page.get("Contents", []):
            key = item["Key"]
            if key.endswith("/"):  # a "directory" marker, no data
                continue
            rel = _safe_relative(key[len(loc.key_prefix) :], loc)
            objects.append(_Object(key, rel, int(item["Size"]), item.get("ETag", "").strip('"')))
    return objects


def _safe_relative(rel: str, loc: S3Url) -> str:
    """``rel`` if it stays inside the cache directory; keys such as ``../x`` are refused."""
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ConfigError(
            f"{loc}: object key {loc.key_prefix + rel!r} does not map to a file inside the "
            "prefix ('..', '.' or empty path segments); refusing to download it, rename the object"
        )
    return str(PurePosixPath(*parts))


def _md5_etag(etag: str) -> str | None:
    """The MD5 an ETag stands for; None for multipart uploads (``<hash>-<parts>``) and others."""
    return etag.lower() if re.fullmatch(r"[0-9a-fA-F]{32}", etag) else None


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _is_current(path: Path, obj: _Object) -> bool:
    """Whether a cached file can be kept: same size and, when the ETag is an MD5, same MD5."""
    if not path.is_file() or path.stat().st_size != obj.size:
        return False
    md5 = _md5_etag(obj.etag)
    return md5 is not None and _md5(path) == md5


def verify_download(path: Path, obj_size: int, etag: str, name: str) -> None:
    """Raise ConfigError when a downloaded file differs from its object's size or MD5."""
    size = path.stat().st_size
    if size != obj_size:
        raise ConfigError(f"{name}: downloaded {size} bytes, the object has {obj_size}; retry")
    md5 = _md5_etag(etag)
    if md5 is not None and _md5(path) != md5:
        raise ConfigError(f"{name}: the download does not match the object's ETag MD5; retry")


def _download_one(client: Any, loc: S3Url, obj: _Object, dest: Path) -> None:
    final = dest / obj.rel
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}{PART_SUFFIX}")
    try:
        client.download_file(loc.bucket, obj.key, str(tmp))
        verify_download(tmp, obj.size, obj.etag, f"s3://{loc.bucket}/{obj.key}")
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _download_all(client: Any, loc: S3Url, todo: list[_Object], dest: Path, workers: int) -> None:
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as pool:
        futures = [pool.submit(_download_one, client, loc, o, dest) for o in todo]
        try:
            for future in tqdm(
                as_completed(futures), total=len(futures), desc="download", disable=None
            ):
                future.result()
        except BaseException:
            for f in futures:  # stop at the first failure
                f.cancel()
            raise


def _remove_stale(dest: Path, keep: set[str]) -> None:
    """Delete files no longer in the bucket and directories left empty."""
    for path in sorted(dest.rglob("*"), reverse=True):  # children before their parents
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif path.relative_to(dest).as_posix() not in keep:
            logger.debug("removing %s: no longer in the bucket", path)
            path.unlink()
