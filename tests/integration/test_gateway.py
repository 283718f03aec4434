"""The HTTP edge end to end: a signed client against ``croupier gateway run``, with the real
broker, PostgreSQL and a worker behind it.

One gateway and one worker serve the whole module (their start-up is most of the cost);
each test uses its own players, transaction ids, bet ids and API keys.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from config.settings import Settings
from croupier.gateway import READY
from croupier.gateway.auth import hmac_signature
from croupier.gateway.command import OPENAPI_FILE
from croupier.gateway.config import add_key
from croupier.gateway.store import Store
from croupier.stack.process import free_port
from sinks.postgres.migrate import migrate
from tests.conftest import ROOT, Services, WorkerProcess, settings_env
from tests.integration.helpers import (
    BETS_AT,
    bet,
    done,
    joined,
    odds_change,
    produce,
    query,
    wait_for,
)
from topologies.topics import create_topics

pytestmark = pytest.mark.integration

D = Decimal
GAME = "croupier-dice"
PROVIDER_SECRET = b"psp-secret-0123456789abcdef"
PLAYERS = ["gw-p1", "gw-p2", "gw-p3", "gw-p4"]


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Gateway:
    settings: Settings
    env: dict[str, str]
    port: int
    log: Path
    partner: rsa.RSAPrivateKey
    stranger: rsa.RSAPrivateKey
    keys: dict[str, str]
    worker: WorkerProcess
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "croupier", "gateway", "run"],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        out.close()
        self.starts += 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.log.read_text(errors="replace").count(READY) >= self.starts:
                return
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
            time.sleep(0.1)
        raise AssertionError(f"gateway not ready; log {self.log}")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    # -- a client ---------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            raw = resp.read()
            ctype = resp.getheader("Content-Type") or ""
            data = json.loads(raw) if "json" in ctype and raw else raw
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def signed(
        self,
        path: str,
        payload: dict[str, Any],
        *,
        key: rsa.RSAPrivateKey | None = None,
        header: str = "X-Hub88-Signature",
    ) -> tuple[int, Any]:
        body = json.dumps(payload).encode()
        sig = (key or self.partner).sign(body, padding.PKCS1v15(), hashes.SHA256())
        status, _, data = self.request(
            "POST",
            path,
            body,
            {header: base64.b64encode(sig).decode(), "Content-Type": "application/json"},
        )
        return status, data

    def webhook(
        self,
        provider: str,
        payload: dict[str, Any],
        *,
        at: int | None = None,
        secret: bytes = PROVIDER_SECRET,
    ) -> tuple[int, Any, dict[str, str]]:
        body = json.dumps(payload).encode()
        ts = str(int(time.time()) if at is None else at)
        headers = {"X-Timestamp": ts, "X-Signature": hmac_signature(secret, ts, body)}
        status, _, data = self.request("POST", f"/payments/{provider}", body, headers)
        return status, data, headers


def _settings(services: Services, report_key: Path) -> Settings:
    tag = uuid.uuid4().hex[:10]
    s = Settings(
        KAFKA_BOOTSTRAP_SERVERS=services.kafka,
        CROUPIER_PG_DSN=services.pg_dsn,
        CROUPIER_PG_ADMIN_DSN=services.pg_admin_dsn,
        CROUPIER_CLICKHOUSE_URL=services.clickhouse_url,
        CROUPIER_PG_SCHEMA=f"t_{tag}",
        CROUPIER_APP_ID=f"croupier-t{tag}",
        CROUPIER_TOPIC_PREFIX=f"t{tag}.",
        CROUPIER_TOPIC_PARTITIONS=3,
        CROUPIER_BATCH_MAX=100,
        CROUPIER_AUDIT_CHECKPOINT_INTERVAL=0,
        CROUPIER_CLOCK_SKEW_SECONDS=86_400,
        CROUPIER_REPORT_SIGNING_KEY=str(report_key),
    )
    create_topics(s)
    migrate(s.migration_dsn, s.pg_schema)
    return s


@pytest.fixture(scope="module")
def gw(
    services: Services, report_signing_key: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    s = _settings(services, report_signing_key)
    home = tmp_path_factory.mktemp("gateway")
    partner, stranger = _rsa(), _rsa()
    (home / "partners").mkdir()
    (home / "partners" / "hub.pem").write_bytes(
        partner.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (home / "providers").mkdir()
    (home / "providers" / "psp.secret").write_bytes(PROVIDER_SECRET)
    keys = {name: add_key(home, name) for name in ("web", "other", "killed", "limited")}
    logs = ROOT / ".stack" / "test" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    wlog, glog = logs / "gateway-worker.log", logs / "gateway.log"
    for log in (wlog, glog):
        log.unlink(missing_ok=True)
    env = {**os.environ, **settings_env(s), "PYTHONUNBUFFERED": "1"}
    with open(wlog, "ab") as out:
        wproc = subprocess.Popen(
            [sys.executable, "-m", "croupier", "worker", "--name", "gw"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    worker = WorkerProcess(wproc, wlog)
    port = free_port()
    genv = {
        **env,
        "CROUPIER_GATEWAY_PORT": str(port),
        "CROUPIER_GATEWAY_DIR": str(home),
        "CROUPIER_GATEWAY_DEADLINE": "2",
        "CROUPIER_GATEWAY_RATE": "20",
        "CROUPIER_GATEWAY_BURST": "40",
    }
    g = Gateway(s, genv, port, glog, partner, stranger, keys, worker)
    try:
        produce(s, "players", [kv for p in PLAYERS for kv in joined(p)])
        produce(
            s, "odds", [("m-gw", odds_change("m-gw", {"1x2": {"home": "2.10", "away": "3.60"}}))]
        )
        g.start()
        worker.wait_ready()
        wait_for(lambda: done(s, "players") == 2 * len(PLAYERS), timeout=60, what="players")
        # Every player is funded through the signed webhook itself.
        for p in PLAYERS:
            status, _, _ = g.webhook(
                "psp",
                {
                    "type": "deposit",
                    "payment_id": f"d-{p}",
                    "player_id": p,
                    "amount": "100.00",
                    "currency": "EUR",
                    "timestamp": "2026-11-24T18:00:00Z",
                },
            )
            assert status == 202
        wait_for(lambda: done(s, "payments") == len(PLAYERS), timeout=60, what="deposits")
        yield g
    finally:
        g.stop()
        worker.proc.kill()
        worker.proc.wait(30)


def cash(g: Gateway, player: str) -> Decimal:
    rows = query(
        g.settings,
        "SELECT balance FROM ledger_accounts WHERE owner = %s AND kind = 'cash'",
        (player,),
    )
    return D(rows[0][0])


def hub(
    kind: str, tx: str, player: str, rnd: str, amount: int | None = None, **more: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "user": player,
        "transaction_uuid": tx,
        "request_uuid": uuid.uuid4().hex,
        "round": rnd,
        "game_code": GAME,
        "token": "t",
        **more,
    }
    if kind != "rollback":
        body.update(amount=amount, currency="EUR")
    return body


def moved(g: Gateway, player: str) -> list[tuple[Any, ...]]:
    return query(
        g.settings,
        "SELECT l.idempotency_key, l.amount FROM ledger_transactions l "
        "JOIN casino_transactions c ON l.idempotency_key LIKE '%%:' || c.transaction_id "
        "WHERE c.player_id = %s AND l.status = 'applied' ORDER BY l.txn_id",
        (player,),
    )


def test_wallet_retry_win_rollback_and_signatures(gw: Gateway) -> None:
    p = "gw-p1"
    status, body = gw.signed(
        "/user/balance", {"user": p, "request_uuid": "r0", "token": "t", "game_code": GAME}
    )
    assert (status, body) == (
        200,
        {
            "user": p,
            "status": "RS_OK",
            "request_uuid": "r0",
            "currency": "EUR",
            "balance": 10_000_000,
        },
    )

    bet1 = hub("bet", "h-b1", p, "h-r1", 1_000_000)
    first = gw.signed("/transaction/bet", bet1)
    retry = gw.signed("/transaction/bet", bet1)  # the aggregator's retry: same call, same answer
    assert (
        first
        == retry
        == (
            200,
            {
                "user": p,
                "status": "RS_OK",
                "request_uuid": bet1["request_uuid"],
                "currency": "EUR",
                "balance": 9_000_000,
            },
        )
    )
    conflict = gw.signed("/transaction/bet", {**bet1, "amount": 2_000_000})
    assert conflict[1]["status"] == "RS_ERROR_DUPLICATE_TRANSACTION"

    win = hub("win", "h-w1", p, "h-r1", 2_500_000, reference_transaction_uuid="h-b1")
    assert gw.signed("/transaction/win", win)[1]["balance"] == 11_500_000
    # A rollback of a bet whose round was already paid is refused: the win stands.
    late = gw.signed(
        "/transaction/rollback",
        hub("rollback", "h-rb1", p, "h-r1", reference_transaction_uuid="h-b1"),
    )
    assert late[1]["status"] == "RS_ERROR_UNKNOWN" and late[1]["balance"] == 11_500_000
    bet2 = hub("bet", "h-b2", p, "h-r2", 500_000)
    assert gw.signed("/transaction/bet", bet2)[1]["balance"] == 11_000_000
    rb = hub("rollback", "h-rb2", p, "h-r2", reference_transaction_uuid="h-b2")
    assert gw.signed("/transaction/rollback", rb)[1] == {
        "user": p,
        "status": "RS_OK",
        "request_uuid": rb["request_uuid"],
        "currency": "EUR",
        "balance": 11_500_000,
    }
    assert gw.signed("/transaction/rollback", rb)[1]["balance"] == 11_500_000  # retried: no move
    broke = gw.signed("/transaction/bet", hub("bet", "h-b3", p, "h-r3", 10**9))
    assert broke[1]["status"] == "RS_ERROR_NOT_ENOUGH_MONEY" and broke[1]["balance"] == 11_500_000

    # Refused before anything is published: another key, a tampered body, no signature,
    # a signature over other bytes, too fine an amount, a body too large.
    stolen = hub("bet", "h-x1", p, "h-r9", 100_000)
    assert (
        gw.signed("/transaction/bet", stolen, key=gw.stranger)[1]["status"]
        == "RS_ERROR_INVALID_SIGNATURE"
    )
    body = json.dumps(stolen).encode()
    sig = base64.b64encode(gw.partner.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()
    tampered = body.replace(b"100000", b"900000")
    for headers, raw in (
        ({"X-Hub88-Signature": sig}, tampered),
        ({}, body),
        ({"X-Hub88-Signature": "!!notbase64"}, body),
        ({"X-Hub88-Signature": sig}, body + b" "),
    ):
        _, _, refused = gw.request("POST", "/transaction/bet", raw, headers)
        assert refused["status"] == "RS_ERROR_INVALID_SIGNATURE"
    assert (
        gw.signed("/transaction/bet", hub("bet", "h-x2", p, "h-r9", 1))[1]["status"]
        == "RS_ERROR_WRONG_TYPES"
    )
    status, headers, problem = gw.request("POST", "/transaction/bet", b"x" * 70_000)
    assert status == 413 and headers["content-type"] == "application/problem+json"
    assert problem["status"] == 413

    # The generic variant answers with the casino-results message and an HTTP status.
    call = {
        "type": "debit",
        "transaction_id": "h-g1",
        "round_id": "h-r4",
        "game_id": GAME,
        "player_id": p,
        "amount": "1.00",
        "currency": "EUR",
        "timestamp": "2026-12-01T00:00:00Z",
    }
    status, answer = gw.signed("/wallet/v1/debit", call, header="X-Signature")
    assert status == 200 and answer["status"] == "ok" and answer["balance"] == "114.00"
    poor = {**call, "transaction_id": "h-g2", "amount": "5000.00"}
    status, answer = gw.signed("/wallet/v1/debit", poor, header="X-Signature")
    assert status == 402 and answer["error"] == "insufficient_funds"
    status, problem = gw.signed("/wallet/v1/debit", call, key=gw.stranger, header="X-Signature")
    assert status == 401 and problem["type"].endswith("invalid-signature")

    # The ledger moved exactly what the answers say, once per transaction.
    assert cash(gw, p) == D("114.00")
    assert [k for k, _ in moved(gw, p)] == [
        "casino-debit:h-b1",
        "casino-credit:h-w1",
        "casino-debit:h-b2",
        "casino-rollback:h-rb2",
        "casino-debit:h-g1",
    ]
    assert query(
        gw.settings, "SELECT count(*) FROM casino_transactions WHERE transaction_id LIKE 'h-x%%'"
    ) == [(0,)]


def test_deadline_passed_is_retryable_and_the_retry_is_answered_from_the_store(gw: Gateway) -> None:
    p = "gw-p2"
    call = hub("bet", "d-b1", p, "d-r1", 700_000)
    gw.worker.proc.send_signal(signal.SIGSTOP)  # the flow is away: nothing answers in time
    try:
        started = time.monotonic()
        status, body = gw.signed("/transaction/bet", call)
        assert status == 200 and body["status"] == "RS_ERROR_UNKNOWN"
        assert time.monotonic() - started >= 1.9
    finally:
        gw.worker.proc.send_signal(signal.SIGCONT)
    wait_for(
        lambda: (
            query(
                gw.settings,
                "SELECT count(*) FROM casino_transactions WHERE transaction_id = 'd-b1'",
            )
            == [(1,)]
        ),
        timeout=60,
        what="the decision",
    )
    calls_before = query(gw.settings, "SELECT count(*) FROM casino_calls")
    status, body = gw.signed("/transaction/bet", call)
    assert (status, body["status"], body["balance"]) == (200, "RS_OK", 9_300_000)
    # Answered from casino_transactions: nothing was published for the retry.
    time.sleep(1)
    assert query(gw.settings, "SELECT count(*) FROM casino_calls") == calls_before
    assert cash(gw, p) == D("93.00")


def test_the_gateway_reads_postgresql_read_only(gw: Gateway) -> None:
    async def write() -> None:
        store = Store(gw.settings.pg_dsn.get_secret_value(), gw.settings.pg_schema)
        await store.open()
        try:
            assert await store.balance("gw-p1", "EUR") is not None
            async with store.pool.connection() as conn:
                await conn.execute("INSERT INTO player_events (player_id) VALUES ('x')")
        finally:
            await store.close()

    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        asyncio.run(write())


def test_webhooks_signed_in_window_and_once(gw: Gateway) -> None:
    p = "gw-p3"
    deposit = {
        "type": "deposit",
        "payment_id": "w-d1",
        "player_id": p,
        "amount": "7.00",
        "currency": "EUR",
        "timestamp": "2026-11-24T18:00:00Z",
    }
    status, body, headers = gw.webhook("psp", deposit)
    assert (status, body) == (202, {"payment_id": "w-d1", "status": "queued"})
    raw = json.dumps(deposit).encode()
    # The same delivery again (a replay): refused while inside the window.
    status, _, problem = gw.request("POST", "/payments/psp", raw, headers)
    assert status == 409 and problem["type"].endswith("replayed")
    old = gw.webhook("psp", {**deposit, "payment_id": "w-d2"}, at=int(time.time()) - 310)
    assert old[0] == 401 and old[1]["type"].endswith("expired")
    future = gw.webhook("psp", {**deposit, "payment_id": "w-d3"}, at=int(time.time()) + 310)
    assert future[0] == 401
    forged = gw.webhook("psp", {**deposit, "payment_id": "w-d4"}, secret=b"x" * 27)
    assert forged[0] == 401 and forged[1]["type"].endswith("invalid-signature")
    assert gw.webhook("nobody", {**deposit, "payment_id": "w-d5"}, secret=b"x" * 27)[0] == 401
    tampered = dict(headers)
    status, _, _ = gw.request("POST", "/payments/psp", raw.replace(b"7.00", b"9.00"), tampered)
    assert status == 401
    bad = gw.webhook("psp", {**deposit, "payment_id": "w-d6", "amount": 7})
    assert bad[0] == 422 and bad[1]["type"].endswith("invalid")
    wait_for(lambda: cash(gw, p) == D("107.00"), timeout=30, what="the deposit")
    time.sleep(1)
    assert cash(gw, p) == D("107.00")
    assert query(
        gw.settings, "SELECT count(*) FROM payment_decisions WHERE player_id = %s", (p,)
    ) == [(2,)]


class _Sse(threading.Thread):
    def __init__(self, g: Gateway, key: str, query_string: str = "") -> None:
        super().__init__(daemon=True)
        self.g, self.key, self.qs = g, key, query_string
        self.events: list[dict[str, Any]] = []
        self.status = 0
        self.open = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.g.port, timeout=60)
        conn.request("GET", "/bets/stream" + self.qs, headers={"X-Api-Key": self.key})
        resp = conn.getresponse()
        self.status = resp.status
        self.open.set()
        if resp.status != 200:
            return
        while True:
            line = resp.fp.readline()
            if not line:
                return
            if line.startswith(b"data: "):
                self.events.append(json.loads(line[6:]))


def test_bet_ticket_then_decision_by_get_and_by_sse(gw: Gateway) -> None:
    p, key = "gw-p4", gw.keys["web"]
    mine, theirs, player = (
        _Sse(gw, key),
        _Sse(gw, gw.keys["other"]),
        _Sse(gw, gw.keys["other"], f"?player={p}"),
    )
    for s in (mine, theirs, player):
        s.start()
        assert s.open.wait(10) and s.status == 200
    time.sleep(0.3)
    raw = bet("gw-bet-1", p, "10.00", [("m-gw", "1x2", "home", "2.10")])
    status, headers, ticket = gw.request("POST", "/bets", raw, {"X-Api-Key": key})
    assert status == 202 and ticket == {
        "bet_id": "gw-bet-1",
        "player_id": p,
        "status": "pending",
        "decision": "/bets/gw-bet-1",
    }
    assert headers["location"] == "/bets/gw-bet-1"
    got: dict[str, Any] = {}

    def decided() -> bool:
        status, _, body = gw.request("GET", "/bets/gw-bet-1", headers={"X-Api-Key": key})
        got.update(body if status == 200 else {})
        return status == 200

    wait_for(decided, timeout=30, what="the decision")
    assert got["status"] == "accepted" and got["odds"] == "2.10"
    wait_for(lambda: len(mine.events) == 1 and len(player.events) == 1, timeout=10, what="SSE")
    assert mine.events == player.events == [got]
    assert theirs.events == []  # another front end's stream never sees this key's bets
    assert BETS_AT

    # The ways around the key: none, a wrong one, the hash itself; a bad bet; the rate.
    keys_file = json.loads((Path(gw.env["CROUPIER_GATEWAY_DIR"]) / "keys.json").read_text())
    for headers in ({}, {"X-Api-Key": key + "x"}, {"X-Api-Key": keys_file["web"]}):
        status, h, problem = gw.request("POST", "/bets", raw, headers)
        assert status == 401 and h["content-type"] == "application/problem+json"
        assert gw.request("GET", "/bets/gw-bet-1", headers=headers)[0] == 401
        assert gw.request("GET", "/bets/stream", headers=headers)[0] == 401
    status, _, problem = gw.request("POST", "/bets", b'{"bet_id": "x"}', {"X-Api-Key": key})
    assert status == 422 and problem["title"] == "Not a bet request"
    limited = [
        gw.request("GET", "/bets/nope", headers={"X-Api-Key": gw.keys["limited"]})[0]
        for _ in range(60)
    ]
    assert limited.count(429) > 0 and set(limited) <= {404, 429}
    assert gw.request("GET", "/bets/nope", headers={"X-Api-Key": key})[0] == 404  # its own bucket

    # Around it: health, readiness, metrics, and the OpenAPI document as checked in.
    assert gw.request("GET", "/healthz")[0] == 200 and gw.request("GET", "/readyz")[0] == 200
    status, _, text = gw.request("GET", "/metrics")
    assert status == 200
    assert b'croupier_gateway_requests_total{method="POST",route="/bets",status="202"}' in text
    assert b'croupier_gateway_request_seconds_bucket{le="0.15",route="/transaction/bet"}' in text
    served = gw.request("GET", "/openapi.json")[2]
    assert served == json.loads(OPENAPI_FILE.read_text())


def test_sigkill_mid_stream_loses_no_acknowledged_ticket(gw: Gateway) -> None:
    key = gw.keys["killed"]
    acked: list[str] = []
    stop = threading.Event()

    def post(n: int) -> None:
        i = 0
        while not stop.is_set():
            bet_id = f"k-{n}-{i}"
            i += 1
            raw = bet(bet_id, f"gw-k{n}", "1.00", [("m-gw", "1x2", "home", "2.10")])
            try:
                status, _, _ = gw.request("POST", "/bets", raw, {"X-Api-Key": key})
            except (OSError, http.client.HTTPException):
                return  # the gateway is gone (killed mid-answer, or refusing)
            if status == 202:
                acked.append(bet_id)

    posters = [threading.Thread(target=post, args=(n,)) for n in range(4)]
    for t in posters:
        t.start()
    wait_for(lambda: len(acked) >= 30, timeout=30, what="tickets")
    gw.stop(signal.SIGKILL)
    stop.set()
    for t in posters:
        t.join(30)
    answered = set(acked)
    assert len(answered) >= 30

    def all_decided() -> bool:
        rows = query(gw.settings, "SELECT bet_id FROM bets WHERE bet_id LIKE 'k-%%'")
        return answered <= {r[0] for r in rows}

    wait_for(all_decided, timeout=60, what="a decision for every ticket answered 202")
    gw.start()  # the module's gateway comes back for whoever runs after
    assert gw.request("GET", "/readyz")[0] == 200
