"""Preparing from ``s3://`` against a real SeaweedFS S3 server on loopback."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from servers import s3_client, seaweedfs
from test_prepare import TINY, make_imagefolder, make_vtab, save_image

from dyn_adapter.data import s3
from dyn_adapter.data.config import DataConfig
from dyn_adapter.data.prepare import prepare
from dyn_adapter.data.prepared import PreparedData
from dyn_adapter.errors import ConfigError

pytestmark = pytest.mark.integration

KEY_ID = "AKIADYNADAPTERTEST"
SECRET = "dyn-adapter-test-secret-0123456789"
BUCKET = "datasets"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory) -> Iterator[str]:
    with seaweedfs(tmp_path_factory.mktemp("weed"), KEY_ID, SECRET) as url:
        yield url


def client(endpoint: str, secret: str = SECRET):
    return s3_client(endpoint, KEY_ID, secret)


def upload(endpoint: str, local: Path, prefix: str) -> None:
    s3c = client(endpoint)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        s3c.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(local).as_posix()}")


@pytest.fixture(scope="module")
def bucket(endpoint, tmp_path_factory) -> Path:
    """The bucket with ``folder/`` (an image folder) and ``vtab/`` (a task); returns the local tree."""
    local = tmp_path_factory.mktemp("local")
    make_imagefolder(local / "folder", per_class=5)
    make_vtab(local / "vtab")
    deadline = time.monotonic() + 30
    while True:  # the volume server may register a moment after the gateway answers
        try:
            client(endpoint).create_bucket(Bucket=BUCKET)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    upload(endpoint, local / "folder", "folder")
    upload(endpoint, local / "vtab", "vtab")
    return local


@pytest.fixture(autouse=True)
def credentials(monkeypatch, tmp_path):
    """Credentials only from the environment; no ~/.aws, no instance metadata; a private cache."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("DYN_ADAPTER_CACHE", str(tmp_path / "cache"))


def prepare_both(tmp_path: Path, endpoint: str, local: Path, **data) -> tuple[dict, dict]:
    """Prepare the S3 copy and the local copy; return both manifests after comparing arrays."""
    remote = prepare(
        DataConfig(path=data.pop("url"), s3_endpoint_url=endpoint, **data), TINY, tmp_path / "s3"
    )
    here = prepare(DataConfig(path=str(local), **data), TINY, tmp_path / "local")
    a, b = PreparedData(remote.out_dir), PreparedData(here.out_dir)
    for split in ("train", "val", "test"):
        for x, y in zip(a.split(split), b.split(split), strict=True):
            assert np.array_equal(x, y)
    return a.manifest, b.manifest


def test_imagefolder_from_s3_equals_local(tmp_path, endpoint, bucket, caplog):
    caplog.set_level("DEBUG")
    remote, local = prepare_both(
        tmp_path,
        endpoint,
        bucket / "folder",
        url=f"s3://{BUCKET}/folder/",
        source="imagefolder",
        train_size=6,
        val_size=3,
    )
    assert remote["splits"] == local["splits"] and remote["classes"] == local["classes"]
    assert remote["path"] == f"s3://{BUCKET}/folder"
    assert remote["config"]["s3_endpoint_url"] == endpoint
    manifest_text = (tmp_path / "s3" / "manifest.json").read_text()
    assert SECRET not in manifest_text and KEY_ID not in manifest_text
    assert SECRET not in caplog.text
    # botocore's own DEBUG records show the key id (in the Authorization header), never the secret.
    info = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert KEY_ID not in info and endpoint in info


def test_vtab_from_s3_equals_local(tmp_path, endpoint, bucket):
    remote, local = prepare_both(
        tmp_path, endpoint, bucket / "vtab", url=f"s3://{BUCKET}/vtab", source="vtab"
    )
    assert remote["splits"] == local["splits"]


def test_endpoint_from_the_environment(tmp_path, endpoint, bucket, monkeypatch):
    """With no data.s3_endpoint_url, the SDK's $AWS_ENDPOINT_URL_S3 is used, and not recorded."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    url = f"s3://{BUCKET}/vtab"
    remote = prepare(DataConfig(path=url, source="vtab"), TINY, tmp_path / "s3")
    here = prepare(DataConfig(path=str(bucket / "vtab"), source="vtab"), TINY, tmp_path / "local")
    a, b = PreparedData(remote.out_dir), PreparedData(here.out_dir)
    assert np.array_equal(a.split("train")[0], b.split("train")[0])
    assert a.manifest["config"]["s3_endpoint_url"] is None
    assert endpoint not in (tmp_path / "s3" / "manifest.json").read_text()
    # The mirror is keyed by the endpoint in use, not filed under AWS.
    cache = s3.default_cache_dir(s3.parse_url(url), endpoint)
    assert cache.is_dir() and any(cache.rglob("*.txt"))


def test_cache_follows_the_bucket(tmp_path, endpoint):
    """A second prepare sees changed and deleted objects; unchanged ones are not downloaded."""
    local = make_imagefolder(tmp_path / "sync", per_class=4, varied=False)
    upload(endpoint, local, "sync")
    cfg = dict(source="imagefolder", train_size=3, val_size=3, s3_endpoint_url=endpoint)
    prepare(DataConfig(path=f"s3://{BUCKET}/sync", **cfg), TINY, tmp_path / "first")
    cache = s3.default_cache_dir(s3.parse_url(f"s3://{BUCKET}/sync"), endpoint)
    assert (cache / "cat" / "0.png").is_file()
    kept_inode = (cache / "dog" / "0.png").stat().st_ino

    s3c = client(endpoint)
    s3c.delete_object(Bucket=BUCKET, Key="sync/cat/0.png")
    (local / "cat" / "0.png").unlink()
    save_image(local / "dog" / "1.png", seed=999)
    s3c.upload_file(str(local / "dog" / "1.png"), BUCKET, "sync/dog/1.png")

    second = prepare(DataConfig(path=f"s3://{BUCKET}/sync", **cfg), TINY, tmp_path / "second")
    here = prepare(DataConfig(path=str(local), **cfg), TINY, tmp_path / "here")
    assert (
        PreparedData(second.out_dir).manifest["splits"]
        == PreparedData(here.out_dir).manifest["splits"]
    )
    assert not (cache / "cat" / "0.png").exists()
    assert (cache / "dog" / "0.png").stat().st_ino == kept_inode  # not downloaded again


def test_bad_image_is_named_by_its_url(tmp_path, endpoint, bucket):
    s3c = client(endpoint)
    for name in ("cat", "dog"):
        s3c.upload_file(str(bucket / "folder" / name / "0.png"), BUCKET, f"bad/{name}/0.png")
        s3c.upload_file(str(bucket / "folder" / name / "1.png"), BUCKET, f"bad/{name}/1.png")
    s3c.put_object(Bucket=BUCKET, Key="bad/dog/2.png", Body=b"not a png")
    with pytest.raises(ConfigError, match=rf"s3://{BUCKET}/bad/dog/2\.png: not a readable image"):
        prepare(
            DataConfig(
                source="imagefolder",
                path=f"s3://{BUCKET}/bad",
                train_size=2,
                val_size=2,
                s3_endpoint_url=endpoint,
            ),
            TINY,
            tmp_path / "out",
        )


def test_missing_prefix(tmp_path, endpoint, bucket):
    url = f"s3://{BUCKET}/nothing-here"
    with pytest.raises(ConfigError, match=f"{url}: no objects under this prefix"):
        prepare(DataConfig(path=url, s3_endpoint_url=endpoint), TINY, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_prefix_is_a_folder_not_a_string_prefix(tmp_path, endpoint, bucket):
    url = f"s3://{BUCKET}/fold"  # "folder/..." must not match
    with pytest.raises(ConfigError, match="no objects under this prefix"):
        prepare(DataConfig(path=url, s3_endpoint_url=endpoint), TINY, tmp_path / "out")


def test_missing_bucket(tmp_path, endpoint):
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket' does not exist"):
        prepare(
            DataConfig(path="s3://no-such-bucket/x", s3_endpoint_url=endpoint), TINY, tmp_path / "o"
        )


@pytest.mark.parametrize(("key_id", "secret"), [(KEY_ID, "wrong-secret"), ("AKIAUNKNOWN", SECRET)])
def test_wrong_credentials(tmp_path, endpoint, bucket, monkeypatch, key_id, secret):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    cfg = DataConfig(source="vtab", path=f"s3://{BUCKET}/vtab", s3_endpoint_url=endpoint)
    with pytest.raises(ConfigError, match="refused the credentials") as info:
        prepare(cfg, TINY, tmp_path / "out")
    assert secret not in str(info.value)


def test_no_credentials(tmp_path, endpoint, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    cfg = DataConfig(source="vtab", path=f"s3://{BUCKET}/vtab", s3_endpoint_url=endpoint)
    with pytest.raises(ConfigError, match="no S3 credentials found: set AWS_ACCESS_KEY_ID"):
        prepare(cfg, TINY, tmp_path / "out")


# --- pieces that need no server --------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [("s3://b-1/a/b/", "b-1", "a/b"), ("s3://b-1", "b-1", ""), ("s3://b-1/x", "b-1", "x")],
)
def test_parse_url(url, bucket, prefix):
    assert s3.parse_url(url) == s3.S3Url(bucket, prefix)


@pytest.mark.parametrize("url", ["s3:///x", "s3://b/a/../c", "http://b/x", "s3://b/a//c"])
def test_parse_url_refuses(url):
    with pytest.raises(ConfigError, match="data.path"):
        s3.parse_url(url)


@pytest.mark.parametrize("rel", ["../x.png", "a/../../x.png", "/etc/passwd", "a//b.png"])
def test_keys_escaping_the_cache_are_refused(rel):
    with pytest.raises(ConfigError, match="refusing to download"):
        s3._safe_relative(rel, s3.S3Url("b", "p"))


def test_verify_download(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    md5 = hashlib.md5(b"hello").hexdigest()
    s3.verify_download(path, 5, md5, "s3://b/f")
    s3.verify_download(path, 5, "0123abcd-3", "s3://b/f")  # multipart: size only
    with pytest.raises(ConfigError, match="s3://b/f: downloaded 5 bytes, the object has 6"):
        s3.verify_download(path, 6, md5, "s3://b/f")
    with pytest.raises(ConfigError, match="s3://b/f: the download does not match"):
        s3.verify_download(path, 5, hashlib.md5(b"other").hexdigest(), "s3://b/f")
