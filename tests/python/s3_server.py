"""A real S3-compatible server on loopback for tests: `moto_server` from the test venv (pinned in
requirements.txt). `S3Server().start()` runs it on a free port; `.endpoint` is its URL, `.client()`
a boto3 client to look inside the bucket. Any credentials are accepted (`ACCESS_KEY`/`SECRET_KEY`
are what the tests hand to Clew through the standard AWS environment variables).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from clew_helpers import free_port, start_listening

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


def moto_bin() -> Path:
    raw = os.environ.get("CLEW_MOTO_SERVER")
    return Path(raw) if raw else Path(sys.executable).parent / "moto_server"


class S3Server:
    def __init__(self, log_path: Path):
        self.port = free_port()
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def aws_env(self) -> dict[str, str]:
        """What a Clew process needs in its environment to reach this server's buckets."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION}

    def start(self, timeout: float = 30.0) -> "S3Server":
        self.proc = start_listening(
            [str(moto_bin()), "-H", "127.0.0.1", "-p", str(self.port)],
            self.log_path, self.port, "moto_server", timeout,
        )
        return self

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        out: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out.extend(o["Key"] for o in page.get("Contents", []))
        return out

    def json(self, bucket: str, key: str):
        return json.loads(self.client().get_object(Bucket=bucket, Key=key)["Body"].read())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
