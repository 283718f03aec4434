"""Kafka security settings -> each client's configuration: every client kind gets the same
protocol, mechanism, credentials and trust; bad combinations are refused; secrets are never
shown."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from config.kafka import (
    faust_broker_credentials,
    kafka_python_security,
    librdkafka_conf,
    librdkafka_security,
    ssl_context,
)
from config.settings import Settings
from croupier.stack.kafka import TlsFiles, make_tls

PASSWORD = "pa55-w0rd-never-shown"
KEY_PASSWORD = "key-pa55-never-shown"
USER = {"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


def secure(protocol: str, mechanism: str = "SCRAM-SHA-512", **env: Any) -> Settings:
    values: dict[str, Any] = {"KAFKA_SECURITY_PROTOCOL": protocol}
    if protocol.startswith("SASL_"):
        values.update(KAFKA_SASL_MECHANISM=mechanism, KAFKA_SASL_USERNAME="croupier",
                      KAFKA_SASL_PASSWORD=PASSWORD)  # fmt: skip
    return Settings(**{**values, **env})


def seen_by_each_client(s: Settings) -> dict[str, tuple[Any, ...]]:
    """(protocol, mechanism, user, password, CA file or context) as each client kind gets it."""
    rd = librdkafka_security(s)
    kp = kafka_python_security(s)
    aio = dict(credentials_to_aiokafka_auth(faust_broker_credentials(s)))
    context = aio.get("ssl_context")
    return {
        "librdkafka": (rd["security.protocol"], rd.get("sasl.mechanism"), rd.get("sasl.username"),
                       rd.get("sasl.password"), rd.get("ssl.ca.location")),
        "kafka-python": (kp["security_protocol"], kp.get("sasl_mechanism"),
                         kp.get("sasl_plain_username"), kp.get("sasl_plain_password"),
                         kp.get("ssl_cafile")),
        "faust": (aio["security_protocol"], aio.get("sasl_mechanism"),
                  aio.get("sasl_plain_username"), aio.get("sasl_plain_password"),
                  s.kafka_ssl_ca_file and context is not None and str(s.kafka_ssl_ca_file)),
    }  # fmt: skip


def test_plaintext_by_default_for_every_client() -> None:
    s = Settings()
    assert s.kafka_security_protocol == "PLAINTEXT"
    assert librdkafka_security(s) == {"security.protocol": "PLAINTEXT"}
    assert kafka_python_security(s) == {"security_protocol": "PLAINTEXT"}
    assert faust_broker_credentials(s) is None
    assert ssl_context(s) is None
    assert librdkafka_conf(s, **{"group.id": "g"}) == {
        "bootstrap.servers": "127.0.0.1:9092", "security.protocol": "PLAINTEXT", "group.id": "g",
        "logger": logging.getLogger("librdkafka"),
    }  # fmt: skip


@pytest.mark.parametrize("protocol", ["SSL", "SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_every_client_gets_the_same_protocol_mechanism_and_credentials(
    protocol: str, mechanism: str, tls: TlsFiles
) -> None:
    ca = {"KAFKA_SSL_CA_FILE": str(tls.ca_cert)} if protocol.endswith("SSL") else {}
    s = secure(protocol, mechanism, **ca)
    seen = seen_by_each_client(s)
    sasl = protocol.startswith("SASL_")
    expected = (
        protocol,
        mechanism if sasl else None,
        "croupier" if sasl else None,
        PASSWORD if sasl else None,
        str(tls.ca_cert) if ca else None,
    )
    assert seen == dict.fromkeys(seen, expected)


def test_tls_checks_the_broker_and_its_name(tls: TlsFiles) -> None:
    s = secure("SASL_SSL", KAFKA_SSL_CA_FILE=str(tls.ca_cert))
    context = ssl_context(s)
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "Croupier embedded Kafka CA"),),)
    ]
    assert librdkafka_security(s)["ssl.endpoint.identification.algorithm"] == "https"
    assert kafka_python_security(s)["ssl_check_hostname"] is True
    # Without a CA file: the system's trust store, still checked.
    system = ssl_context(secure("SSL"))
    assert system is not None and system.verify_mode == ssl.CERT_REQUIRED


def test_a_client_certificate_reaches_every_client(tls: TlsFiles) -> None:
    # broker.pem holds a key and its certificate: good enough to stand for a client's.
    pem = str(tls.broker_pem)
    s = secure("SSL", KAFKA_SSL_CA_FILE=str(tls.ca_cert), KAFKA_SSL_CERT_FILE=pem,
               KAFKA_SSL_KEY_FILE=pem)  # fmt: skip
    rd, kp = librdkafka_security(s), kafka_python_security(s)
    assert (rd["ssl.certificate.location"], rd["ssl.key.location"]) == (pem, pem)
    assert (kp["ssl_certfile"], kp["ssl_keyfile"]) == (pem, pem)
    assert ssl_context(s) is not None  # load_cert_chain read them
    with pytest.raises(ssl.SSLError):  # a key that is not the certificate's is refused
        ssl_context(s.model_copy(update={"kafka_ssl_key_file": Path(tls.ca_cert)}))


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tls: TlsFiles) -> None:
    for name, value in {
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_MECHANISM": "scram-sha-256",
        "KAFKA_SASL_USERNAME": "croupier", "KAFKA_SASL_PASSWORD": PASSWORD,
        "KAFKA_SSL_CA_FILE": str(tls.ca_cert), "KAFKA_SSL_CERT_FILE": "",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    s = Settings()
    assert (s.kafka_security_protocol, s.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    assert s.kafka_ssl_cert_file is None  # empty is unset
    # A child process (a worker) sees the same settings.
    child: dict[str, Any] = s.as_env()
    assert Settings(**child) == s


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"}, "needs"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "needs"),
        (USER, "does not use them"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", **USER}, "does not use them"),
        ({"KAFKA_SSL_CA_FILE": "/ca.pem"}, "does not use TLS"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SSL_CA_FILE": "/ca.pem", **USER},
            "does not use TLS",
        ),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERT_FILE": "/c.pem"}, "go together"),
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI", **USER},
            "KAFKA_SASL_MECHANISM",
        ),
    ],
)
def test_settings_a_client_would_misread_are_refused(env: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings(**env)


def test_secrets_are_never_shown(tls: TlsFiles) -> None:
    pem = str(tls.broker_pem)
    s = secure("SASL_SSL", KAFKA_SSL_CA_FILE=str(tls.ca_cert), KAFKA_SSL_CERT_FILE=pem,
               KAFKA_SSL_KEY_FILE=pem, KAFKA_SSL_KEY_PASSWORD=KEY_PASSWORD)  # fmt: skip
    shown = [repr(s), str(s), s.model_dump_json(), repr(s.model_dump()),
             repr(faust_broker_credentials(s))]  # fmt: skip
    for text in shown:
        assert PASSWORD not in text and KEY_PASSWORD not in text
    # They reach the clients, and a child process's environment, and only those.
    assert librdkafka_security(s)["sasl.password"] == PASSWORD
    assert librdkafka_security(s)["ssl.key.password"] == KEY_PASSWORD
    assert kafka_python_security(s)["ssl_password"] == KEY_PASSWORD
    assert s.as_env()["KAFKA_SASL_PASSWORD"] == PASSWORD
