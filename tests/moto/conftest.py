"""Fixtures: one patched moto server per test session, started through server.py exactly as the
Rust tests start it (this venv's python, `--port 0`, a piped stdin, the `PORT n` line), and
reset before every test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.config import Config

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "server.py")
REGION = "us-east-1"
ACCOUNT = "123456789012"
# Only a safety net against a hung start: a healthy start takes a few seconds.
START_TIMEOUT_S = 120


def start_server(*extra: str) -> tuple[subprocess.Popen[str], int]:
    """Spawn server.py and wait for its `PORT n` line."""
    proc = subprocess.Popen(
        [sys.executable, SERVER, "--port", "0", *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_S)
    if not line or not line[0].startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"server.py did not announce its port: {line!r}, exit {proc.poll()}")
    return proc, int(line[0].split()[1])


def stop_server(proc: subprocess.Popen[str]) -> int:
    """Close its stdin (how a dying test process stops it) and wait for it to exit."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@dataclass
class Server:
    """A running patched moto with helpers for its harness routes and boto3 clients."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A harness route: (HTTP status, decoded JSON)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.call(method, path, body)
        assert status == 200, f"{method} {path} -> {status} {answer}"
        return answer

    def seed(self, cluster: str, instances: int, tags: dict[str, str] | None = None) -> list[str]:
        body = {"cluster": cluster, "instances": instances, "tags": tags or {}}
        return self.ok("POST", "/_harness/seed", body)["instances"]

    def tasks(self, cluster: str, instance: str, started_by: str | None, count: int) -> list[str]:
        body = {"cluster": cluster, "instance": instance, "started_by": started_by, "count": count}
        return self.ok("POST", "/_harness/tasks", body)["tasks"]

    def ecs(self, attempts: int = 1, mode: str = "standard", access_key: str = "testing") -> Any:
        """An ECS client making `attempts` tries per call; one by default, so every fault reaches the test."""
        return boto3.session.Session().client(
            "ecs",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=access_key,
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": attempts, "mode": mode}),
        )


@pytest.fixture(scope="session")
def server() -> Any:
    proc, port = start_server()
    yield Server(port)
    stop_server(proc)


@pytest.fixture(autouse=True)
def clean(request: pytest.FixtureRequest) -> None:
    if "server" in request.fixturenames:
        request.getfixturevalue("server").ok("POST", "/_harness/reset")


@pytest.fixture
def ecs(server: Server) -> Any:
    return server.ecs()
