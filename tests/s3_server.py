"""A real S3 server for the tests: moto in server mode on a free 127.0.0.1 port, speaking S3 over HTTP.

Import the fixtures into a test module (``from tests.s3_server import s3_endpoint, s3_bucket``). Each
test gets a fresh bucket; the server lives for the session.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

ACCESS_KEY = "test-access-key"
#: Tests assert this never shows up in a log line or a scrape.
SECRET_KEY = "test-SECRET-key-0123456789"
REGION = "us-east-1"
_names = itertools.count()


@dataclass(frozen=True)
class S3Bucket:
    """An empty bucket on the test server, and the settings that point a process at it."""

    endpoint: str
    name: str
    prefix: str = "facechain"

    @property
    def url(self) -> str:
        return f"s3://{self.name}/{self.prefix}"

    def settings(self) -> dict[str, Any]:
        """Fields for BotSettings / WorkerSettings."""
        return {
            "blob_url": self.url,
            "s3_endpoint_url": self.endpoint,
            "s3_region": REGION,
            "s3_access_key_id": ACCESS_KEY,
            "s3_secret_access_key": SECRET_KEY,
        }

    def env(self) -> dict[str, str]:
        """The same, as FACECHAIN_* environment variables for a subprocess."""
        return {f"FACECHAIN_{name.upper()}": str(value) for name, value in self.settings().items()}

    def object_names(self) -> list[str]:
        """Every object in the bucket, read with another client (boto3), prefix included."""
        client = _client(self.endpoint)
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def _client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY
    )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a moto S3 server running in this test session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> S3Bucket:
    """A new, empty bucket for this test."""
    bucket = S3Bucket(s3_endpoint, f"facechain-test-{os.getpid()}-{next(_names)}")
    _client(s3_endpoint).create_bucket(Bucket=bucket.name)
    return bucket
