"""Apache Kafka 4.x, single node in KRaft mode (broker and controller in one JVM).

The jars come from Maven Central through ``kafka/pom.xml`` and are cached under
``<cache>/libs``; storage is formatted on first start (what ``kafka-storage.sh format
--standalone`` runs), and the broker is ``java -cp 'libs/*' kafka.Kafka server.properties``.
Everything listens on 127.0.0.1 only.

With ``sasl_ssl_port`` the broker also listens there with TLS and SASL/SCRAM-SHA-512, as a
managed Kafka does: ``make_tls`` writes a private CA and the broker's certificate (for
``127.0.0.1`` and ``localhost``), and ``add_scram_user`` creates a user through the
plaintext listener, which stays for the broker itself and for the stack's own checks.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

from croupier.stack.process import (
    StackError,
    exit_status,
    port_open,
    read_pid,
    spawn,
    stop_pid,
    tail,
    wait_unlocked,
    wait_until,
)

MAIN_CLASS = "kafka.Kafka"
SCRAM = "SCRAM-SHA-512"  # the SASL_SSL listener's one mechanism


class _Died(Exception):
    """The broker process ended during start-up; ``status`` says how, when we can know."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


STORAGE_TOOL = "kafka.tools.StorageTool"
DOCKER_HINT = "or run the whole stack with Docker instead: docker compose up"
INSTALL_JAVA = "install a JDK/JRE 17+ (Debian: apt-get install openjdk-17-jre-headless)"


def _resource(name: str) -> Path:
    return Path(str(resources.files("croupier.stack") / "kafka" / name))


def require_java() -> str:
    """The ``java`` executable, checked to be Java 17 or newer."""
    java = shutil.which("java")
    if java is None:
        msg = (
            "the embedded Kafka broker needs Java 17 or newer, and `java` is not on PATH: "
            f"{INSTALL_JAVA}, {DOCKER_HINT}"
        )
        raise StackError(msg)
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8" style
        major = int(match.group(2))
    if major < 17:
        msg = (
            f"the embedded Kafka broker needs Java 17 or newer; `{java}` is Java {major}: "
            f"{INSTALL_JAVA}, {DOCKER_HINT}"
        )
        raise StackError(msg)
    return java


def ensure_jars(cache: Path) -> Path:
    """Resolve the broker's jars from Maven Central into ``cache/libs`` once; return that dir."""
    pom = _resource("pom.xml")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    libs = cache / "libs"
    stamp = libs / f".resolved-{digest}"
    if stamp.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        msg = (
            "the embedded Kafka broker's jars come from Maven Central through Maven, and `mvn` "
            f"is not on PATH: install Apache Maven (Debian: apt-get install maven), {DOCKER_HINT}"
        )
        raise StackError(msg)
    if libs.exists():
        shutil.rmtree(libs)
    libs.mkdir(parents=True)
    cmd = [
        mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}", "-DincludeScope=runtime",
    ]  # fmt: skip
    if os.environ.get("CROUPIER_MAVEN_REPO"):  # a separate local repository, e.g. for a cold start
        cmd.append(f"-Dmaven.repo.local={os.environ['CROUPIER_MAVEN_REPO']}")
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        msg = (
            "Maven could not resolve Apache Kafka from Maven Central "
            f"(exit {result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
        raise StackError(msg)
    if not list(libs.glob("kafka_2.13-*.jar")):
        msg = f"Maven finished but no kafka_2.13 jar is in {libs}"
        raise StackError(msg)
    stamp.touch()
    return libs


def new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID, url-safe base64 without padding (22 chars).

    Like Kafka's own ``Uuid.randomUuid()``, never one starting with ``-``: the storage
    tool's argument parser would take it for an option (one id in 64 otherwise).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class TlsFiles:
    """A private CA and a broker's key and certificate, PEM files under one folder."""

    ca_cert: Path  # what clients trust (KAFKA_SSL_CA_FILE)
    broker_pem: Path  # the broker's PKCS#8 key and certificate chain, for ssl.keystore.type=PEM


def make_tls(folder: Path, *, days: int = 30) -> TlsFiles:
    """A new CA and a broker certificate it signs, for 127.0.0.1 and localhost, in ``folder``
    (the broker's key file is mode 0600)."""
    from ipaddress import IPv4Address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Croupier embedded Kafka CA")])
    usage = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
         "encipher_only", "decipher_only"), False,
    )  # fmt: skip
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    names = [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files = TlsFiles(folder / "ca.crt", folder / "broker.pem")
    files.ca_cert.write_bytes(ca.public_bytes(pem))
    # Kafka's PEM key store reads a PKCS#8 key. The CA's key is not kept: nothing else is
    # ever signed with it.
    pkcs8 = serialization.PrivateFormat.PKCS8
    files.broker_pem.touch(mode=0o600)
    files.broker_pem.write_bytes(
        key.private_bytes(pem, pkcs8, serialization.NoEncryption())
        + cert.public_bytes(pem)
        + ca.public_bytes(pem)
    )
    return files


@dataclass(frozen=True)
class KafkaBroker:
    """One embedded broker: its data under ``home``, jars under ``cache``."""

    home: Path
    cache: Path
    logs: Path
    port: int
    controller_port: int
    heap: str = "1g"
    # A SASL_SSL listener (SCRAM-SHA-512) on this port, with the key and certificate of
    # ``tls.broker_pem``; 0: none.
    sasl_ssl_port: int = 0
    tls: TlsFiles | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_ssl_port}"

    @property
    def pidfile(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def logfile(self) -> Path:
        return self.logs / "kafka.out"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    def pid(self) -> int | None:
        return read_pid(self.pidfile, MAIN_CLASS)

    def running(self) -> bool:
        return self.pid() is not None and port_open("127.0.0.1", self.port)

    def _listeners(self) -> list[str]:
        """Listener settings: plaintext and controller, and SASL_SSL when asked for."""
        listeners = [
            f"PLAINTEXT://127.0.0.1:{self.port}",
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
        ]
        protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        extra: list[str] = []
        if self.sasl_ssl_port:
            if self.tls is None:
                msg = "a SASL_SSL listener needs the broker's key and certificate (make_tls)"
                raise StackError(msg)
            listeners.append(f"SASL_SSL://127.0.0.1:{self.sasl_ssl_port}")
            protocols += ",SASL_SSL:SASL_SSL"
            prefix = "listener.name.sasl_ssl"
            extra = [
                f"{prefix}.sasl.enabled.mechanisms={SCRAM}",
                f"{prefix}.{SCRAM.lower()}.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                f"{prefix}.ssl.keystore.type=PEM",
                f"{prefix}.ssl.keystore.location={self.tls.broker_pem}",
            ]
        joined = ",".join(listeners)
        return [
            f"listeners={joined}",
            f"advertised.listeners={joined}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"listener.security.protocol.map={protocols}",
            *extra,
        ]

    def server_properties(self) -> str:
        data = self.home / "data"
        return "\n".join(
            [
                "# Written by `croupier stack up`; edits are overwritten on the next start.",
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
                *self._listeners(),
                f"log.dirs={data}",
                "num.partitions=6",
                # Topics are provisioned explicitly (`croupier topics create`, Faust's own
                # declarations), so a producer with a misspelt topic fails loudly.
                "auto.create.topics.enable=false",
                # One node: every internal topic has one replica.
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=10",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                # Compacted topics (Faust changelogs) are cleaned promptly.
                "log.cleaner.enable=true",
                "log.cleaner.backoff.ms=1000",
                "",
            ]
        )

    def _java_cmd(self, java: str, libs: Path, main: str, *args: str) -> list[str]:
        return [
            java,
            "-Xms256m",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={_resource('log4j2.properties')}",
            f"-Dkafka.logs.dir={self.logs}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def start(self, *, timeout: float = 90.0) -> None:
        """Start the broker unless it runs already; format storage on first start."""
        if self.running():
            return
        java = require_java()
        libs = ensure_jars(self.cache)
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.server_properties())
        if not (self.home / "data" / "meta.properties").exists():
            cmd = self._java_cmd(
                java, libs, STORAGE_TOOL, "format", "--standalone",
                "-t", new_cluster_id(), "-c", str(self.config_file),
            )  # fmt: skip
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                msg = f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}"
                raise StackError(msg)
        for port in (self.port, self.controller_port, self.sasl_ssl_port):
            if not port:
                continue
            if port_open("127.0.0.1", port):
                msg = (
                    f"port {port} on 127.0.0.1 is taken by another program; choose free ports "
                    "with CROUPIER_KAFKA_PORT / CROUPIER_KAFKA_CONTROLLER_PORT"
                )
                raise StackError(msg)
        lock = self.home / "data" / ".lock"
        if not wait_unlocked(lock, timeout=60):
            msg = f"another process holds {lock}: is a Kafka broker still running on this data?"
            raise StackError(msg)
        cmd = self._java_cmd(java, libs, MAIN_CLASS, str(self.config_file))
        # A JVM that dies before it has written a line (a signal at birth, seen once in CI and
        # never understood) gets one more try; any death with something to say is reported.
        for attempt in (1, 2):
            out_size = self.logfile.stat().st_size if self.logfile.exists() else 0
            pid = spawn(cmd, pidfile=self.pidfile, logfile=self.logfile, env=dict(os.environ))
            try:
                ready = functools.partial(self._ready, pid)
                wait_until(ready, timeout=timeout, what="Kafka", logfile=self.logfile)
                return
            except _Died as died:
                silent = self.logfile.stat().st_size == out_size
                if attempt == 1 and silent:
                    continue
                msg = (
                    f"Kafka exited during start-up ({died.status}):\n{tail(self.logfile)}\n"
                    f"last lines of {self.logs / 'kafka.log'}:\n{tail(self.logs / 'kafka.log')}"
                )
                raise StackError(msg) from None

    def _ready(self, pid: int) -> bool:
        if read_pid(self.pidfile, MAIN_CLASS) != pid:
            raise _Died(exit_status(pid) or "it is gone")
        return port_open("127.0.0.1", self.port) and self._metadata_ok()

    def _metadata_ok(self) -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        try:
            meta = admin.list_topics(timeout=2)
        except Exception:
            return False
        return bool(meta.brokers)

    def add_scram_user(self, user: str, password: str) -> None:
        """Create ``user`` (or set its password) for the SASL_SSL listener, through the
        plaintext one."""
        from confluent_kafka.admin import (
            AdminClient,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
        upsert = UserScramCredentialUpsertion(user, info, password.encode())
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result(timeout=30)

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            stop_pid(pid, timeout=60)
            wait_unlocked(self.home / "data" / ".lock", timeout=30)
        self.pidfile.unlink(missing_ok=True)
