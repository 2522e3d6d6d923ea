"""Fixtures: a real `clew serve` on free loopback ports with a temporary data dir.

- `clew`: one server per test module (cheap; isolation between tests comes from unique service names
  and trace ids).
- `clew_factory`: fresh servers owned by one test (for tests that stop, kill or restart them).

Each server's output goes to a log file; when a test fails, the tail of the log of every server it used
is attached to the report ("clew server log"). At teardown the server gets SIGTERM and must exit
cleanly within 30 s.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from clew_helpers import ClewServer, clew_bin

_LOG_TAIL_LINES = 120


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_sessionstart(session):
    binary = clew_bin()
    if not binary.exists():
        raise pytest.UsageError(f"clew binary not found at {binary}: build it (cargo build) or set CLEW_BIN")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
    if rep.failed:
        for server in getattr(item, "_clew_servers", []):
            rep.sections.append(
                (f"clew server log ({server.log_path})", server.log_tail(_LOG_TAIL_LINES) or "(empty)")
            )


def _register(request, server: ClewServer) -> None:
    # Attach to the test item (for module-scoped servers, to every test that uses it).
    node = request.node
    if isinstance(node, pytest.Item):
        node._clew_servers = getattr(node, "_clew_servers", []) + [server]


def _teardown(servers: list[ClewServer]) -> None:
    errors = []
    for s in servers:
        if s.alive():
            try:
                code = s.stop(signal.SIGTERM, timeout=30)
            except TimeoutError as e:
                errors.append(str(e))
                continue
            if code != 0:
                errors.append(
                    f"clew serve exited with code {code} after SIGTERM (expected a clean 0); log:\n{s.log_tail(40)}"
                )
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture(scope="module")
def _module_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("clew")
    server = ClewServer(base / "data", base / "clew.log").start()
    yield server
    _teardown([server])


@pytest.fixture
def clew(request, _module_server) -> ClewServer:
    """A running server shared by the tests of one module."""
    assert _module_server.alive(), f"the shared clew server died; log:\n{_module_server.log_tail()}"
    _register(request, _module_server)
    return _module_server


@pytest.fixture
def clew_factory(request, tmp_path):
    """Returns `make(data_dir=None, extra_args=())`, which starts a server owned by this test."""
    servers: list[ClewServer] = []

    def make(data_dir: Path | None = None, extra_args=(), start: bool = True) -> ClewServer:
        n = len(servers)
        server = ClewServer(data_dir or tmp_path / f"data{n}", tmp_path / f"clew{n}.log", extra_args)
        servers.append(server)
        _register(request, server)
        return server.start() if start else server

    yield make
    _teardown(servers)


@pytest.fixture
def kafka_broker(tmp_path):
    """A real Kafka-protocol broker (Tansu, in-memory) on a free loopback port, owned by one test."""
    from kafka_broker import KafkaBroker

    broker = KafkaBroker(tmp_path / "tansu.log").start()
    yield broker
    broker.stop()


@pytest.fixture
def s3_server(tmp_path):
    """A real S3-compatible server (moto_server) on a free loopback port, owned by one test."""
    from s3_server import S3Server

    server = S3Server(tmp_path / "moto.log").start()
    yield server
    server.stop()
