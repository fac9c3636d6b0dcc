"""A real single-node Apache Kafka broker (KRaft) for development and tests.

The pinned ``org.apache.kafka:kafka_2.13`` release and its runtime
dependencies are fetched once with Maven into ``<cache_dir>/kafka/<version>``.
The broker's state (config, log dirs, pid, log file) lives in
``<data_dir>/kafka``. Nothing here is used against a production cluster.

    broker = LocalKafka(settings)
    broker.start()        # fetches jars on first use, formats storage, waits for metadata
    broker.stop()         # SIGTERM, wait, SIGKILL; idempotent
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cardflow.config import Settings
from cardflow.errors import BrokerError

# Logging bridge: Kafka 4 logs through slf4j 1.x; this binds it to log4j2.
_LOG4J_VERSION = "2.25.5"
_MANIFEST = "MANIFEST.txt"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.cardflow</groupId><artifactId>kafka-runtime</artifactId>
  <version>{version}</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    log_file: Path

    def __str__(self) -> str:
        if self.running:
            return f"running (pid {self.pid}) at {self.bootstrap}; log {self.log_file}"
        return f"not running (would listen at {self.bootstrap}); log {self.log_file}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def java_major_version() -> int:
    """The major version of ``java`` on PATH; BrokerError when missing."""
    java = shutil.which("java")
    if not java:
        raise BrokerError(
            "java not found on PATH: Kafka needs Java 17 or newer. "
            "Install it (Debian: apt-get install openjdk-17-jre-headless) and retry."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise BrokerError(f"cannot read the Java version from `java -version`: {out.stderr!r}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


class LocalKafka:
    """Fetch, start, stop and inspect one local KRaft broker."""

    def __init__(self, settings: Settings) -> None:
        self.version = settings.kafka_version
        self.port = settings.kafka_port
        self.controller_port = settings.kafka_controller_port
        self.heap = settings.kafka_heap
        self.home = settings.cache_dir / "kafka" / self.version
        self.libs = self.home / "libs"
        self.state = settings.data_dir / "kafka"
        self.log_file = self.state / "broker.log"
        self.pid_file = self.state / "broker.pid"
        self.bootstrap = f"127.0.0.1:{self.port}"

    # Jars -----------------------------------------------------------------

    def cache_problem(self) -> str | None:
        """Why the jar cache is unusable, or None when it is complete."""
        manifest = self.libs / _MANIFEST
        if not manifest.exists():
            return "not fetched"
        for name in manifest.read_text().split():
            jar = self.libs / name
            if not jar.exists():
                return f"{jar} is missing"
            if not zipfile.is_zipfile(jar):
                return f"{jar} is not a valid jar"
        return None

    def fetch(self, refresh: bool = False) -> None:
        """Download the pinned Kafka jars with Maven, once (or again with ``refresh``)."""
        if not refresh and self.cache_problem() is None:
            return
        mvn = shutil.which("mvn")
        if not mvn:
            raise BrokerError(
                "mvn (Apache Maven) not found on PATH: it fetches the Kafka jars from "
                "Maven Central. Install it (Debian: apt-get install maven) and retry."
            )
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "pom.xml").write_text(_POM.format(version=self.version, log4j=_LOG4J_VERSION))
        staging = self.home / "libs.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        proc = subprocess.run(
            [mvn, "-B", "-q", "-f", str(self.home / "pom.xml"),
             "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={staging}"],
            capture_output=True, text=True, check=False,
        )
        jars = sorted(p.name for p in staging.glob("*.jar")) if staging.exists() else []
        bad = [j for j in jars if not zipfile.is_zipfile(staging / j)]
        if proc.returncode != 0 or not jars or bad:
            shutil.rmtree(staging, ignore_errors=True)
            detail = (proc.stdout + proc.stderr)[-2000:] or f"corrupt jars: {bad}"
            raise BrokerError(
                f"fetching Kafka {self.version} with Maven failed. If ~/.m2 holds a broken "
                f"download, delete ~/.m2/repository/org/apache/kafka and retry.\n{detail}"
            )
        (staging / _MANIFEST).write_text("\n".join(jars) + "\n")
        shutil.rmtree(self.libs, ignore_errors=True)
        staging.rename(self.libs)

    # Process ---------------------------------------------------------------

    def _pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        # A recycled pid belongs to someone else: only ours runs kafka.Kafka with our config.
        if b"kafka.Kafka" not in cmdline or str(self.state).encode() not in cmdline:
            return None
        return pid

    def status(self) -> BrokerStatus:
        pid = self._pid()
        return BrokerStatus(pid is not None, pid, self.bootstrap, self.log_file)

    def _write_config(self) -> Path:
        self.state.mkdir(parents=True, exist_ok=True)
        props = self.state / "server.properties"
        props.write_text(
            "\n".join([
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={self.state / 'data'}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "num.partitions=1",
                "log.cleaner.backoff.ms=1000",
            ]) + "\n"
        )
        (self.state / "log4j2.properties").write_text(_LOG4J2)
        return props

    def _java(self, *args: str, heap: str = "256m") -> list[str]:
        return [
            "java", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.state / 'log4j2.properties'}",
            "-cp", f"{self.libs}/*", *args,
        ]

    def _format(self, props: Path) -> None:
        if (self.state / "data" / "meta.properties").exists():
            return
        proc = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", new_cluster_id(), "-c", str(props)),
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{proc.stdout}{proc.stderr}")

    def start(self, timeout: float = 90.0) -> BrokerStatus:
        """Start the broker and wait until a metadata request succeeds."""
        current = self.status()
        if current.running:
            return current
        major = java_major_version()
        if major < 17:
            raise BrokerError(f"Kafka {self.version} needs Java 17 or newer; found Java {major}.")
        for port, name in ((self.port, "CARDFLOW_KAFKA_PORT"),
                           (self.controller_port, "CARDFLOW_KAFKA_CONTROLLER_PORT")):
            if _port_in_use(port):
                raise BrokerError(
                    f"port {port} on 127.0.0.1 is already in use by another process. "
                    f"Stop that process or choose another port with {name}."
                )
        self.fetch()
        problem = self.cache_problem()
        if problem:
            raise BrokerError(
                f"the Kafka jar cache is corrupt ({problem}); run `cardflow kafka fetch --refresh`."
            )
        props = self._write_config()
        self._format(props)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                self._java("kafka.Kafka", str(props), heap=self.heap),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        try:
            self._wait_ready(proc, timeout)
        except BaseException:
            self._terminate(proc.pid)
            self.pid_file.unlink(missing_ok=True)
            raise
        return self.status()

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(
                    f"Kafka exited with code {proc.returncode} during start. "
                    f"Last lines of {self.log_file}:\n{self.tail()}"
                )
            try:
                meta = admin.list_topics(timeout=2)
                if meta.brokers:
                    return
            except Exception:  # noqa: BLE001 - not up yet; keep polling until the deadline
                time.sleep(0.3)
        raise BrokerError(
            f"Kafka did not answer a metadata request within {timeout:.0f}s. "
            f"Last lines of {self.log_file}:\n{self.tail()}"
        )

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    @staticmethod
    def _terminate(pid: int, grace: float = 30.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)

    def stop(self, grace: float = 30.0) -> bool:
        """Stop the broker; True when one was running. Safe to call when stopped."""
        pid = self._pid()
        if pid is not None:
            self._terminate(pid, grace)
        self.pid_file.unlink(missing_ok=True)
        return pid is not None


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; reaps it when it is our exited child."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        if stat.read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes in URL-safe base64 without padding. Never one that
    starts with "-", which the storage tool would read as an option (Kafka's own
    Uuid.randomUuid() avoids those too); one in 64 random ids does."""
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
