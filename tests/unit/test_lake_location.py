"""STREAMBATCH_LAKE_URI resolved into one lake location; secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import load_stream_settings
from foundation.errors import ConfigError, LakeError
from sinks.lake_location import lake_location_of, resolve_lake_location

SECRET = "wJalrXUtnFEMI-do-not-print"
AWS = {
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ENDPOINT_URL": "http://minio:9000",
    "AWS_ALLOW_HTTP": "true",
    "AZURE_STORAGE_ACCOUNT_KEY": "not-for-s3",
}


def test_default_is_the_data_dirs_lake_and_plain_paths_keep_working(tmp_path: Path) -> None:
    assert resolve_lake_location(None, tmp_path, {}).local_path == tmp_path / "lake"
    assert resolve_lake_location(str(tmp_path / "x"), tmp_path, {}).local_path == tmp_path / "x"
    from_file_uri = resolve_lake_location(f"file://{tmp_path}/y", tmp_path, {})
    assert from_file_uri.is_local and from_file_uri.local_path == tmp_path / "y"


def test_s3_takes_the_standard_aws_variables_and_conditional_puts(tmp_path: Path) -> None:
    location = resolve_lake_location("s3://bucket/prefix/", tmp_path, AWS)
    assert location.root == "s3://bucket/prefix" and location.bucket == "bucket"
    options = location.storage_options()
    assert options["AWS_SECRET_ACCESS_KEY"] == SECRET
    assert options["AWS_REGION"] == "eu-west-1"
    assert options["conditional_put"] == "etag"
    assert "AZURE_STORAGE_ACCOUNT_KEY" not in options, "only the URI's cloud"
    assert location.table("orders").uri == "s3://bucket/prefix/orders"


def test_a_locking_provider_replaces_conditional_puts(tmp_path: Path) -> None:
    env = {**AWS, "AWS_S3_LOCKING_PROVIDER": "dynamodb"}
    options = resolve_lake_location("s3://b/p", tmp_path, env).storage_options()
    assert "conditional_put" not in options and options["AWS_S3_LOCKING_PROVIDER"] == "dynamodb"


@pytest.mark.parametrize(
    ("uri", "variable"),
    [
        ("gs://bucket/lake", "GOOGLE_APPLICATION_CREDENTIALS"),
        ("az://container/lake", "AZURE_STORAGE_ACCOUNT_NAME"),
        ("abfss://container@account.dfs.core.windows.net/lake", "AZURE_STORAGE_ACCOUNT_NAME"),
    ],
)
def test_each_cloud_reads_its_own_variables(tmp_path: Path, uri: str, variable: str) -> None:
    env = {variable: "value", "AWS_SECRET_ACCESS_KEY": SECRET}
    location = resolve_lake_location(uri, tmp_path, env)
    assert location.storage_options() == {variable: "value"}
    assert not location.is_local


def test_secrets_never_appear_in_repr_description_or_errors(tmp_path: Path) -> None:
    location = resolve_lake_location("s3://bucket/lake", tmp_path, AWS)
    error = location.error("open", OSError(f"signature with {SECRET} refused\n  403 Forbidden"))
    for text in (repr(location), location.describe(), str(error), repr(location.table("x"))):
        assert SECRET not in text
    assert "AKIAEXAMPLE" in repr(location), "non-secret options stay visible"
    assert "s3://bucket/lake" in str(error) and "\n" not in str(error)
    assert "403 Forbidden" in str(error)


def test_bad_uris_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="STREAMBATCH_LAKE_URI: unsupported scheme 'ftp'"):
        resolve_lake_location("ftp://host/lake", tmp_path, {})
    with pytest.raises(ConfigError, match="no bucket"):
        resolve_lake_location("s3:///lake", tmp_path, {})
    location = resolve_lake_location("s3://b/l", tmp_path, {})
    with pytest.raises(LakeError):
        location.table("../etc")


def test_the_setting_reaches_every_stream(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STREAMBATCH_LAKE_URI", "s3://shared/lake")
    monkeypatch.setenv("STREAMBATCH_ORDERS_LAKE_URI", "s3://ignored/per-stream")
    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    location = lake_location_of(load_stream_settings("orders"))
    assert location.root == "s3://shared/lake"
    assert location.storage_options()["AWS_ENDPOINT_URL"] == "http://minio:9000"
