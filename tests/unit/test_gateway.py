"""The gateway's pure parts: signatures against hostile bodies and headers, the status
table over every reason code, Hub88 amounts, the replay guard, the token bucket, API keys
and the checked-in OpenAPI document."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import stat
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.responses import Response

from croupier.gateway.auth import (
    RateLimiter,
    WebhookRefused,
    api_key_owner,
    hmac_signature,
    rsa_partner,
    verify_webhook,
)
from croupier.gateway.command import OPENAPI_FILE, rendered
from croupier.gateway.config import Credentials, add_key, hash_key
from croupier.gateway.problems import Problem, problem_response
from croupier.gateway.wallet import STATUS, from_hub88, to_hub88
from schemas.outbound import ReasonCode

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PARTNERS = {"hub": KEY.public_key()}
SECRET = b"0123456789abcdef0123"
NOW = 1_800_000_000.0


def sign(body: bytes, key: rsa.RSAPrivateKey = KEY) -> str:
    return base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()


@given(st.binary(max_size=2048))
def test_a_signature_verifies_its_own_body_only(body: bytes) -> None:
    sig = sign(body)
    assert rsa_partner(PARTNERS, body, sig) == "hub"
    assert rsa_partner(PARTNERS, body + b"\x00", sig) is None
    assert rsa_partner(PARTNERS, body, sign(body, OTHER)) is None
    assert rsa_partner({}, body, sig) is None


@given(body=st.binary(max_size=512), header=st.one_of(st.none(), st.text(max_size=3000)))
def test_hostile_signature_headers_are_refused_never_raised(
    body: bytes, header: str | None
) -> None:
    assert rsa_partner(PARTNERS, body, header) is None


@given(st.binary(min_size=256, max_size=256))
def test_random_signature_bytes_of_the_right_size_never_verify(raw: bytes) -> None:
    assert rsa_partner(PARTNERS, b"{}", base64.b64encode(raw).decode()) is None


@given(body=st.binary(max_size=1024), ts=st.text(max_size=40), sig=st.text(max_size=80))
def test_hostile_webhook_headers_are_refused(body: bytes, ts: str, sig: str) -> None:
    good_ts = str(int(NOW))
    if ts == good_ts and sig.lower() == hmac_signature(SECRET, ts, body):
        return  # hypothesis guessed the HMAC: not going to happen
    with pytest.raises(WebhookRefused):
        verify_webhook(SECRET, body, ts, sig, window=300, now=NOW)


@given(body=st.binary(max_size=1024), skew=st.integers(-10_000, 10_000))
def test_webhook_window_and_signature(body: bytes, skew: int) -> None:
    """A replay is refused against PostgreSQL (tests/integration/test_gateway.py)."""
    ts = str(int(NOW) + skew)
    sig = hmac_signature(SECRET, ts, body)
    if abs(skew) > 300:
        with pytest.raises(WebhookRefused) as refused:
            verify_webhook(SECRET, body, ts, sig, window=300, now=NOW)
        assert refused.value.reason == "expired"
        return
    verify_webhook(SECRET, body, ts, sig.upper(), window=300, now=NOW)  # either hex case
    verify_webhook(SECRET, body, ts, sig, window=300, now=NOW)
    with pytest.raises(WebhookRefused) as forged:
        verify_webhook(b"another-secret-123", body, ts, sig, window=300, now=NOW)
    assert forged.value.reason == "signature"


def test_the_status_table_covers_every_reason_code() -> None:
    assert set(STATUS) == set(ReasonCode)
    for hub88, http in STATUS.values():
        assert hub88.startswith("RS_ERROR_") and 400 <= http < 600
    assert STATUS[ReasonCode.INSUFFICIENT_FUNDS][0] == "RS_ERROR_NOT_ENOUGH_MONEY"
    assert STATUS[ReasonCode.DUPLICATE_CONFLICT][0] == "RS_ERROR_DUPLICATE_TRANSACTION"
    assert STATUS[ReasonCode.RETRY_LATER] == ("RS_ERROR_UNKNOWN", 503)  # retryable


@given(st.integers(0, 10**15))
def test_hub88_amounts(units: int) -> None:
    amount = from_hub88(units, "EUR")
    if units % 1000:
        assert amount is None  # finer than a cent
    else:
        assert amount is not None and to_hub88(amount) == units
        assert amount == Decimal(units) / 100_000
    assert from_hub88(100_000, "JPY") == Decimal(1) and from_hub88(50_000, "JPY") is None


def test_token_bucket() -> None:
    limiter = RateLimiter(rate=10, burst=3)
    assert [limiter.take("a", 0.0) for _ in range(3)] == [0, 0, 0]
    assert limiter.take("a", 0.0) == pytest.approx(0.1)
    assert limiter.take("b", 0.0) == 0  # a bucket per key
    assert limiter.take("a", 0.1) == 0
    assert limiter.take("a", 100.0) == 0 and limiter.take("a", 100.0) == 0


def test_api_keys_are_hashed_at_rest(tmp_path: Path) -> None:
    key = add_key(tmp_path, "web")
    text = (tmp_path / "keys.json").read_text()
    assert key not in text and hash_key(key) in text
    assert stat.S_IMODE((tmp_path / "keys.json").stat().st_mode) == 0o600
    creds = Credentials.load(tmp_path)
    assert api_key_owner(creds.keys, key) == "web"
    for wrong in (None, "", key[:-1], hash_key(key), key + " ", "é" * 10, "x" * 300):
        assert api_key_owner(creds.keys, wrong) is None
    rotated = add_key(tmp_path, "web")
    assert api_key_owner(Credentials.load(tmp_path).keys, key) is None
    assert api_key_owner(Credentials.load(tmp_path).keys, rotated) == "web"
    with pytest.raises(ValueError, match="front end name"):
        add_key(tmp_path, "../escape")


def test_credentials_refuse_a_key_that_is_not_rsa_and_a_short_secret(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    (tmp_path / "partners").mkdir()
    pem = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "partners" / "x.pem").write_bytes(pem)
    with pytest.raises(ValueError, match="RSA"):
        Credentials.load(tmp_path)
    (tmp_path / "partners" / "x.pem").unlink()
    (tmp_path / "providers").mkdir()
    (tmp_path / "providers" / "p.secret").write_bytes(b"short")
    with pytest.raises(ValueError, match="16 bytes"):
        Credentials.load(tmp_path)


def test_the_checked_in_openapi_document_is_current() -> None:
    assert OPENAPI_FILE.read_text() == rendered(), "run: croupier gateway openapi --write"
    doc = json.loads(rendered())
    assert {"/user/balance", "/transaction/bet", "/wallet/v1/debit", "/payments/{provider}",
            "/bets", "/bets/{bet_id}", "/bets/stream"} <= set(doc["paths"])  # fmt: skip


def test_the_docs_status_table_is_the_code_s() -> None:
    doc = (OPENAPI_FILE.parents[1] / "gateway.md").read_text()
    rows = re.findall(r"^\| `([a-z_]+)` \| `(RS_[A-Z_]+)` \| (\d+) \|$", doc, flags=re.M)
    assert {ReasonCode(r): (h, int(c)) for r, h, c in rows} == STATUS


def test_compose_runs_the_gateway_on_loopback() -> None:
    import yaml

    compose = yaml.safe_load((OPENAPI_FILE.parents[2] / "docker-compose.yml").read_text())
    gateway = compose["services"]["gateway"]
    assert gateway["command"] == ["gateway", "run"]
    assert gateway["ports"] == ["127.0.0.1:8480:8480"]
    assert gateway["depends_on"]["init"]["condition"] == "service_completed_successfully"


# -- the app's front half, driven over ASGI: no Kafka or PostgreSQL is reached here, since
# every request below is refused before either would be.


def _asgi(
    method: str, path: str, body: bytes, headers: dict[str, str], client: str = "127.0.0.1",
    operator: rsa.RSAPrivateKey | None = None,
) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    from types import SimpleNamespace

    from starlette.applications import Starlette

    from croupier.gateway.app import Edge, routes
    from croupier.gateway.auth import RateLimiter
    from croupier.gateway.config import GatewaySettings
    from croupier.gateway.metrics import Metrics

    table = routes()
    observed = Metrics()
    inner = Starlette(routes=table, exception_handlers={Problem: _problem_handler})
    inner.state.gw = SimpleNamespace(
        credentials=Credentials(partners=PARTNERS, providers={"psp": SECRET}, keys={},
                                operator=operator),
        gateway=GatewaySettings(), limiter=RateLimiter(1000, 1000),
    )  # fmt: skip
    inner.state.metrics = observed
    app = Edge(inner, table, observed, max_body=4096)
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
             "server": ("127.0.0.1", 8480), "client": (client, 40000),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}  # fmt: skip
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    start = sent[0]
    got_headers = {k.decode(): v.decode() for k, v in start["headers"]}  # type: ignore[attr-defined]
    data = b"".join(m.get("body", b"") for m in sent[1:])  # type: ignore[misc]
    return int(start["status"]), got_headers, data  # type: ignore[call-overload]


async def _problem_handler(request: Request, exc: Exception) -> Response:

    assert isinstance(exc, Problem)
    return problem_response(exc)


@given(
    path=st.sampled_from(["/user/balance", "/transaction/bet", "/transaction/win",
                          "/transaction/rollback"]),
    body=st.binary(max_size=2048),
    signature=st.one_of(st.none(), st.text(max_size=400)),
)  # fmt: skip
def test_hostile_hub88_calls_are_refused_in_hub88_s_words(
    path: str, body: bytes, signature: str | None
) -> None:
    headers = {} if signature is None else {"X-Hub88-Signature": signature}
    status, _, data = _asgi("POST", path, body, headers)
    assert status == 200
    assert json.loads(data)["status"] == "RS_ERROR_INVALID_SIGNATURE"


@given(body=st.binary(max_size=2048))
def test_signed_garbage_is_wrong_types_never_an_error(body: bytes) -> None:
    status, _, data = _asgi("POST", "/transaction/bet", body, {"X-Hub88-Signature": sign(body)})
    assert status == 200 and json.loads(data)["status"] == "RS_ERROR_WRONG_TYPES"


@given(body=st.binary(max_size=2048), key=st.text(max_size=100))
def test_hostile_bet_posts_and_webhooks_get_problems(body: bytes, key: str) -> None:
    status, headers, data = _asgi(
        "POST", "/bets", body, {"X-Api-Key": key} if key.isascii() else {}
    )
    assert status == 401 and headers["content-type"] == "application/problem+json"
    assert json.loads(data)["status"] == 401
    status, headers, _ = _asgi("POST", "/payments/psp", body, {"X-Signature": "0" * 64,
                                                               "X-Timestamp": "1"})  # fmt: skip
    assert status == 401 and headers["content-type"] == "application/problem+json"


def test_limits_and_the_metrics_port_for_loopback_only() -> None:
    status, _, data = _asgi("POST", "/transaction/bet", b"x" * 5000, {})
    assert status == 413 and json.loads(data)["type"].endswith("too-large")
    status, _, data = _asgi("POST", "/transaction/bet", b"{}", {"Content-Length": "99999999"})
    assert status == 413
    assert _asgi("GET", "/metrics", b"", {}, client="203.0.113.9")[0] == 403
    assert _asgi("GET", "/metrics", b"", {}, client="::ffff:10.0.0.1")[0] == 403
    status, _, data = _asgi("GET", "/metrics", b"", {})
    assert status == 200 and b"croupier_gateway_requests_total" in data
    assert _asgi("GET", "/nowhere", b"", {})[0] == 404
    # A route's path with another method: Starlette's 405, as before the edge called
    # handlers itself; the templated routes are matched by the edge too.
    assert _asgi("GET", "/transaction/bet", b"", {})[0] == 405
    assert _asgi("DELETE", "/bets/b-1", b"", {})[0] == 405
    status, _, data = _asgi("POST", "/wallet/v1/debit", b"{}", {})
    assert status == 401 and json.loads(data)["type"].endswith("invalid-signature")


def test_hub88_answers_are_signed_with_the_operator_s_key() -> None:
    status, headers, data = _asgi("POST", "/user/balance", b"{}", {}, operator=OTHER)
    assert status == 200 and json.loads(data)["status"] == "RS_ERROR_INVALID_SIGNATURE"
    raw = base64.b64decode(headers["x-hub88-signature"])
    OTHER.public_key().verify(raw, data, padding.PKCS1v15(), hashes.SHA256())  # raises if not
    assert "x-hub88-signature" not in _asgi("POST", "/user/balance", b"{}", {})[1]


def test_the_key_command_prints_the_key_once_and_stores_its_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from croupier.cli import main

    monkeypatch.setenv("CROUPIER_STACK_DIR", "/nonexistent")
    monkeypatch.setenv("CROUPIER_GATEWAY_DIR", str(tmp_path))
    assert main(["gateway", "key", "add", "shop-1"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("cgk_") and len(key) > 40
    assert api_key_owner(Credentials.load(tmp_path).keys, key) == "shop-1"
    assert key not in (tmp_path / "keys.json").read_text()
    assert main(["gateway", "key", "add", "no/slash"]) == 2  # refused, one line, no traceback
    assert "front end name" in capsys.readouterr().err


def test_batched_reads_go_together_and_never_answer_older_than_asked() -> None:
    from croupier.gateway.store import Batched

    asked: list[list[str]] = []
    version = {"n": 0}  # what the "table" holds now
    gate = asyncio.Event()

    async def fetch(keys: list[str]) -> dict[str, int]:
        asked.append(keys)
        seen = version["n"]  # the read starts here
        if len(asked) == 1:
            await gate.wait()
        return {k: seen for k in keys if k != "missing"}

    async def scenario() -> None:
        reads = Batched(fetch)
        first = [asyncio.create_task(reads.get(k)) for k in ("a", "b", "a", "missing")]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        # Asked while the first query is on its way (after a write): the next query.
        version["n"] = 1
        late = asyncio.create_task(reads.get("a"))
        await asyncio.sleep(0)
        gate.set()
        assert await asyncio.gather(*first) == [0, 0, 0, None]
        assert await late == 1
        assert asked == [["a", "b", "missing"], ["a"]]

        async def failing(keys: list[str]) -> dict[str, int]:
            raise RuntimeError("down")

        broken = Batched(failing)
        got = await asyncio.gather(broken.get("x"), broken.get("y"), return_exceptions=True)
        assert [type(e) for e in got] == [RuntimeError, RuntimeError]

    asyncio.run(scenario())
