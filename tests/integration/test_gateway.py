"""The HTTP edge end to end: a signed client against ``croupier gateway run``, with the real
broker, PostgreSQL and a worker behind it.

What the gateway keeps (bet tickets, webhook signatures, Hub88 session tokens) is in
PostgreSQL: the tests restart the gateway and find it there, and try the application's
role on those tables directly.

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
from croupier.gateway.config import add_key, hash_key
from croupier.gateway.store import Store
from croupier.gateway.tokens import issue, revoke
from croupier.stack.process import free_port
from tests.conftest import ROOT, Services, WorkerProcess, make_settings, settings_env
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

pytestmark = pytest.mark.integration

D = Decimal
GAME = "croupier-dice"
PROVIDER_SECRET = b"psp-secret-0123456789abcdef"
PLAYERS = ["gw-p1", "gw-p2", "gw-p3", "gw-p4", "gw-p5", "gw-p6"]
TOKENS: dict[str, str] = {}  # each player's session token at partner "hub", from the fixture


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
    rival: rsa.RSAPrivateKey  # a second configured partner ("rival")
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
        extra: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        body = json.dumps(payload).encode()
        sig = (key or self.partner).sign(body, padding.PKCS1v15(), hashes.SHA256())
        status, _, data = self.request(
            "POST",
            path,
            body,
            {header: base64.b64encode(sig).decode(), "Content-Type": "application/json",
             **(extra or {})},
        )  # fmt: skip
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


@pytest.fixture(scope="module")
def gw(
    services: Services, report_signing_key: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    s = make_settings(services, report_signing_key)
    home = tmp_path_factory.mktemp("gateway")
    partner, stranger, rival = _rsa(), _rsa(), _rsa()
    (home / "partners").mkdir()
    for name, key in (("hub", partner), ("rival", rival)):
        (home / "partners" / f"{name}.pem").write_bytes(
            key.public_key().public_bytes(
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
        "CROUPIER_GATEWAY_PRUNE_EVERY": "1",  # the pruning test waits for the gateway's own
        "CROUPIER_GATEWAY_TOKEN_CACHE": "1",  # the revocation test waits for it
    }
    g = Gateway(s, genv, port, glog, partner, stranger, rival, keys, worker)
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
        for p in PLAYERS:
            TOKENS[p] = issue(s.pg_dsn.get_secret_value(), s.pg_schema, p, 3600, partner="hub")
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
        "token": TOKENS.get(player, "none"),
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
        "/user/balance", {"user": p, "request_uuid": "r0", "token": TOKENS[p], "game_code": GAME}
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
    session = {"X-Session-Token": TOKENS[p]}
    status, answer = gw.signed("/wallet/v1/debit", call, header="X-Signature", extra=session)
    assert status == 200 and answer["status"] == "ok" and answer["balance"] == "114.00"
    poor = {**call, "transaction_id": "h-g2", "amount": "5000.00"}
    status, answer = gw.signed("/wallet/v1/debit", poor, header="X-Signature", extra=session)
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
    conflicting: list[tuple[int, Any]] = []
    gw.worker.proc.send_signal(signal.SIGSTOP)  # the flow is away: nothing answers in time
    try:
        started = time.monotonic()
        status, body = gw.signed("/transaction/bet", call)
        assert status == 200 and body["status"] == "RS_ERROR_UNKNOWN"
        assert time.monotonic() - started >= 1.9
        # A retry that conflicts (another amount) waits while the first call's late answer
        # comes: that answer is not the retry's.
        other = threading.Thread(
            target=lambda: conflicting.append(
                gw.signed("/transaction/bet", {**call, "amount": 900_000})
            )
        )
        other.start()
        time.sleep(0.3)
    finally:
        gw.worker.proc.send_signal(signal.SIGCONT)
    other.join(30)
    assert conflicting[0][1]["status"] != "RS_OK"  # never the first call's answer
    assert conflicting[0][1]["status"] in {"RS_ERROR_DUPLICATE_TRANSACTION", "RS_ERROR_UNKNOWN"}
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
    # Once decided, a conflicting retry is told so (its own answer, not the stored one).
    again = gw.signed("/transaction/bet", {**call, "amount": 800_000})
    assert again[1]["status"] == "RS_ERROR_DUPLICATE_TRANSACTION"
    time.sleep(0.5)
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


def test_hub88_session_tokens(gw: Gateway) -> None:
    p, q = "gw-p5", "gw-p4"
    out = subprocess.run(
        [sys.executable, "-m", "croupier", "gateway", "token", "issue", p, "--ttl", "1",
         "--partner", "hub"],
        env=gw.env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    short = out.stdout.strip()
    assert short.startswith("cgs_") and len(short) > 40
    stored = query(gw.settings, "SELECT token_hash, player_id FROM gateway_tokens")
    assert (hash_key(short), p) in stored and all(short not in str(r) for r in stored)

    def balance(token: Any) -> str:
        body = {"user": p, "request_uuid": uuid.uuid4().hex, "game_code": GAME, "token": token}
        if token is None:
            del body["token"]
        return str(gw.signed("/user/balance", body)[1]["status"])

    assert balance(short) == balance(TOKENS[p]) == "RS_OK"
    # Unknown, another player's, missing, a hash of the token instead of the token.
    for wrong in ("cgs_" + "x" * 43, TOKENS[q], None, "", hash_key(TOKENS[p])):
        assert balance(wrong) == "RS_ERROR_INVALID_TOKEN"
    bet_other = hub("bet", "t-b0", p, "t-r0", 100_000, token=TOKENS[q])
    assert gw.signed("/transaction/bet", bet_other)[1]["status"] == "RS_ERROR_INVALID_TOKEN"
    opened = gw.signed("/transaction/bet", hub("bet", "t-b1", p, "t-r1", 100_000, token=short))
    assert opened[1]["status"] == "RS_OK"
    time.sleep(1.2)  # the short token expires
    assert balance(short) == "RS_ERROR_TOKEN_EXPIRED"
    late_bet = hub("bet", "t-b2", p, "t-r2", 100_000, token=short)
    assert gw.signed("/transaction/bet", late_bet)[1]["status"] == "RS_ERROR_TOKEN_EXPIRED"
    # A win (and a rollback) comes after the session may have ended: not refused for it.
    win = hub("win", "t-w1", p, "t-r1", 300_000, token=short, reference_transaction_uuid="t-b1")
    assert gw.signed("/transaction/win", win)[1]["status"] == "RS_OK"
    assert cash(gw, p) == D("102.00")
    assert query(
        gw.settings, "SELECT count(*) FROM casino_transactions WHERE transaction_id IN "
        "('t-b0', 't-b2')"
    ) == [(0,)]  # fmt: skip
    # The command refuses a token that would never live, or live too long.
    bad = subprocess.run(
        [sys.executable, "-m", "croupier", "gateway", "token", "issue", p, "--ttl", "0",
         "--partner", "hub"],
        env=gw.env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode != 0 and "cgs_" not in bad.stdout
    for ttl in (-5.0, 31 * 86_400.0):
        with pytest.raises(ValueError, match="seconds"):
            issue(
                gw.settings.pg_dsn.get_secret_value(), gw.settings.pg_schema, p, ttl, partner="hub"
            )


def test_the_app_role_writes_gateway_state_only_through_its_functions(gw: Gateway) -> None:
    s = gw.settings
    with psycopg.connect(s.pg_dsn.get_secret_value(), autocommit=True,
                         options=f"-c search_path={s.pg_schema}") as conn:  # fmt: skip
        user = conn.execute("SELECT current_user").fetchone()
        assert user is not None and user[0] != "postgres"  # really the application's login
        claim = "SELECT * FROM gateway_tickets_claim(%s::jsonb) ORDER BY 1"
        got = conn.execute(claim, ('[["lp-1", "web", "gw-p1"], ["lp-0", "web", "gw-p2"]]',))
        assert got.fetchall() == [("lp-0", "web", "gw-p2"), ("lp-1", "web", "gw-p1")]
        # Another key claiming the same bet id (even twice in one call) gets the holder
        # back, not the bet.
        stolen = conn.execute(claim, ('[["lp-1", "other", "gw-p1"], ["lp-1", "x", "y"]]',))
        assert stolen.fetchall() == [("lp-1", "web", "gw-p1")]
        # Transaction claims, several in one call (two of one id): each claim gets its own
        # answer, the first partner to claim an id holds it, a round is its opener's.
        claims = ('[["lp-c1", "hub", "gw-p1", "lp-r1", null], '
                  '["lp-c1", "rival", "gw-p1", "lp-r2", null], '
                  '["lp-c2", "rival", "gw-p1", "lp-r1", "lp-c1"]]')  # fmt: skip
        got = conn.execute("SELECT * FROM gateway_transactions_claim(%s::jsonb) ORDER BY 1",
                           (claims,))  # fmt: skip
        assert got.fetchall() == [(1, "hub", "hub", None, True), (2, "hub", None, None, False),
                                  (3, "rival", "hub", "hub", True)]  # fmt: skip
        again = conn.execute("SELECT fresh FROM gateway_transactions_claim(%s::jsonb)",
                             ('[["lp-c2", "rival", "gw-p1", "lp-r1", "lp-c1"]]',))  # fmt: skip
        assert again.fetchall() == [(False,)]  # a retry's claim is not new
        sig = "ab" * 32
        seen = "SELECT gateway_seen('psp', %s, now())"
        assert conn.execute(seen, (sig,)).fetchone() == (True,)
        assert conn.execute(seen, (sig,)).fetchone() == (False,)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("SELECT gateway_token_issue(%s, 'gw-p1', now() - interval '1 s', 'hub')",
                         ("cd" * 32,))  # fmt: skip
        with pytest.raises(psycopg.errors.CheckViolation):  # a token is some partner's
            conn.execute("SELECT gateway_token_issue(%s, 'gw-p1', now() + interval '1 h', '')",
                         ("cd" * 32,))  # fmt: skip
        # Pruning keeps at least a day: the application cannot wipe tickets, claims or
        # the replay guard at once, whatever interval it asks for.
        for keep in ("1 hour", "-1 day", "0 s", None):
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute("SELECT gateway_prune(%s::interval)", (keep,))
        attempts = [
            "INSERT INTO gateway_tickets (bet_id, key_name, player_id) VALUES ('lp-2', 'x', 'y')",
            "UPDATE gateway_tickets SET key_name = 'other' WHERE bet_id = 'lp-1'",
            "DELETE FROM gateway_tickets WHERE bet_id = 'lp-1'",
            "TRUNCATE gateway_tickets",
            "DELETE FROM gateway_webhooks_seen",
            "UPDATE gateway_webhooks_seen SET signature = repeat('0', 64)",
            "INSERT INTO gateway_webhooks_seen (provider, signature, stamped_at) "
            "VALUES ('psp', repeat('1', 64), now())",
            "INSERT INTO gateway_tokens (token_hash, player_id, expires_at) "
            "VALUES (repeat('2', 64), 'gw-p1', now() + interval '1 day')",
            "UPDATE gateway_tokens SET expires_at = now() + interval '1 year'",
            "DELETE FROM gateway_tokens",
            "DROP TABLE gateway_tokens",
            "INSERT INTO gateway_transactions (transaction_id, partner, player_id, round_id) "
            "VALUES ('lp-t', 'rival', 'gw-p1', 'lp-r')",
            "UPDATE gateway_transactions SET partner = 'rival'",
            "DELETE FROM gateway_transactions",
            "UPDATE gateway_tokens SET partner = 'rival'",
            "UPDATE gateway_tickets SET posted_at = now() - interval '1 year'",
            "ALTER FUNCTION gateway_prune(interval) SECURITY INVOKER",
            "CREATE OR REPLACE FUNCTION gateway_prune(keep interval) RETURNS TABLE "
            "(tickets bigint, transactions bigint, tokens bigint, webhooks bigint) "
            "LANGUAGE sql AS $$ SELECT 0::bigint, 0::bigint, 0::bigint, 0::bigint $$",
            "SET ROLE croupier_gateway",
            "ALTER TABLE gateway_tickets DISABLE TRIGGER ALL",
            "CREATE OR REPLACE FUNCTION gateway_tickets_claim(claims jsonb) "
            "RETURNS TABLE (bet text, holder text, holder_player text) LANGUAGE sql AS "
            "$$ SELECT 'x', 'y', 'z' $$",
        ]
        for statement in attempts:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement.encode())
    assert query(s, "SELECT key_name FROM gateway_tickets WHERE bet_id = 'lp-1'") == [("web",)]
    assert query(
        s, "SELECT count(*) FROM gateway_webhooks_seen WHERE signature = %s", (sig,)
    ) == [(1,)]  # fmt: skip


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
    mine, theirs, player, their_player, my_other_player = (
        _Sse(gw, key),
        _Sse(gw, gw.keys["other"]),
        _Sse(gw, key, f"?player={p}"),
        _Sse(gw, gw.keys["other"], f"?player={p}"),  # the player's, but not this key's bets
        _Sse(gw, key, "?player=gw-p1"),
    )
    for s in (mine, theirs, player, their_player, my_other_player):
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
    # Another front end's stream never sees this key's bets, not even by naming the player.
    assert theirs.events == their_player.events == my_other_player.events == []

    # Another key cannot read the bet: the same 404 as a bet id never posted.
    other = {"X-Api-Key": gw.keys["other"]}
    status, h, problem = gw.request("GET", "/bets/gw-bet-1", headers=other)
    status_none, h_none, problem_none = gw.request("GET", "/bets/gw-bet-none", headers=other)
    assert status == status_none == 404
    assert h["retry-after"] == h_none["retry-after"]
    assert problem["title"] == problem_none["title"] and problem["type"] == problem_none["type"]
    # Nor take the id over: 409, nothing published; the same key posting it again is a retry.
    status, _, problem = gw.request("POST", "/bets", raw, other)
    assert status == 409 and problem["type"].endswith("bet-id-taken")
    assert gw.request("POST", "/bets", raw, {"X-Api-Key": key})[0] == 202
    elsewhere = bet("gw-bet-1", "gw-p1", "10.00", [("m-gw", "1x2", "home", "2.10")])
    assert gw.request("POST", "/bets", elsewhere, {"X-Api-Key": key})[0] == 409
    assert query(gw.settings, "SELECT key_name, player_id FROM gateway_tickets "
                 "WHERE bet_id = 'gw-bet-1'") == [("web", p)]  # fmt: skip
    assert gw.request("GET", "/bets/gw-bet-1", headers={"X-Api-Key": key})[2] == got
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
    """Also: what the gateway keeps is in PostgreSQL. The worker is held while the gateway
    is killed, so every decision reaches the gateway process started after it; that process
    never saw the bets posted, and still streams each only to the key that posted it, reads
    it only to that key, and refuses a webhook replayed from before the kill."""
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
    gw.worker.proc.send_signal(signal.SIGSTOP)
    try:
        deposit = {
            "type": "deposit",
            "payment_id": "k-d1",
            "player_id": "gw-k0",
            "amount": "1.00",
            "currency": "EUR",
            "timestamp": "2026-11-24T18:00:00Z",
        }
        status, _, webhook_headers = gw.webhook("psp", deposit)
        assert status == 202
        for t in posters:
            t.start()
        wait_for(lambda: len(acked) >= 30, timeout=30, what="tickets")
        gw.stop(signal.SIGKILL)
        stop.set()
        for t in posters:
            t.join(30)
        gw.start()  # a new process: nothing in memory
        streams = [_Sse(gw, key), _Sse(gw, gw.keys["other"]), _Sse(gw, key, "?player=gw-k0")]
        for sse in streams:
            sse.start()
            assert sse.open.wait(10) and sse.status == 200
        time.sleep(0.3)
    finally:
        gw.worker.proc.send_signal(signal.SIGCONT)
    answered = set(acked)
    assert len(answered) >= 30

    def all_decided() -> bool:
        rows = query(gw.settings, "SELECT bet_id FROM bets WHERE bet_id LIKE 'k-%%'")
        return answered <= {r[0] for r in rows}

    wait_for(all_decided, timeout=60, what="a decision for every ticket answered 202")
    mine, theirs, k0 = streams
    wait_for(lambda: answered <= {e["bet_id"] for e in mine.events}, timeout=30, what="SSE")
    assert theirs.events == []
    assert k0.events and {e["player_id"] for e in k0.events} == {"gw-k0"}
    some = sorted(answered)[0]
    status, _, decision = gw.request("GET", f"/bets/{some}", headers={"X-Api-Key": key})
    assert status == 200 and decision["bet_id"] == some
    assert gw.request("GET", f"/bets/{some}", headers={"X-Api-Key": gw.keys["other"]})[0] == 404
    raw = bet(some, "gw-k9", "1.00", [("m-gw", "1x2", "home", "2.10")])
    assert gw.request("POST", "/bets", raw, {"X-Api-Key": gw.keys["other"]})[0] == 409
    replay = gw.request("POST", "/payments/psp", json.dumps(deposit).encode(), webhook_headers)
    assert replay[0] == 409 and replay[2]["type"].endswith("replayed")
    assert gw.request("GET", "/readyz")[0] == 200


def test_a_partner_reads_and_moves_only_its_own_players_and_transactions(gw: Gateway) -> None:
    """Two configured partners: "hub" holds gw-p6's session token; "rival" signs validly
    but may neither read nor move gw-p6's money, nor touch hub's transactions."""
    p, tok = "gw-p6", TOKENS["gw-p6"]

    def rival(path: str, body: dict[str, Any], **kw: Any) -> tuple[int, Any]:
        return gw.signed(path, body, key=gw.rival, **kw)

    ask = {"user": p, "request_uuid": "s-0", "token": tok, "game_code": GAME}
    assert gw.signed("/user/balance", ask)[1]["status"] == "RS_OK"
    assert rival("/user/balance", ask)[1] == {
        "user": p, "status": "RS_ERROR_INVALID_TOKEN", "request_uuid": "s-0"}  # fmt: skip
    stake = hub("bet", "s-b1", p, "s-r1", 1_000_000)
    assert rival("/transaction/bet", stake)[1]["status"] == "RS_ERROR_INVALID_TOKEN"
    assert gw.signed("/transaction/bet", stake)[1]["status"] == "RS_OK"  # hub's own bet
    # Hub's round and hub's debit are not there for rival; hub's transaction id is taken.
    for path, body, want in (
        ("/transaction/win", hub("win", "s-w9", p, "s-r1", 5_000_000), "DOES_NOT_EXIST"),
        ("/transaction/rollback",
         hub("rollback", "s-rb9", p, "s-r9", reference_transaction_uuid="s-b1"), "DOES_NOT_EXIST"),
        ("/transaction/win", hub("win", "s-b1", p, "s-r9", 5_000_000), "DUPLICATE_TRANSACTION"),
        ("/transaction/bet", stake, "INVALID_TOKEN"),  # the retry of hub's own call
    ):  # fmt: skip
        got = rival(path, body)[1]
        assert got["status"].endswith(want) and "balance" not in got, (path, got)
    # The generic variant: the same token check on balance and debit (X-Session-Token),
    # the same scoping of credits and rollbacks.
    generic = {"user": p, "request_uuid": "s-g0"}
    for extra in ({}, {"X-Session-Token": tok}):
        status, problem = rival("/wallet/v1/balance", generic, header="X-Signature", extra=extra)
        assert status == 401 and problem["type"].endswith("invalid-token"), problem
    call = {"type": "credit", "transaction_id": "s-g1", "round_id": "s-r1", "game_id": GAME,
            "player_id": p, "amount": "50.00", "currency": "EUR",
            "timestamp": "2026-12-01T00:00:00Z"}  # fmt: skip
    status, problem = rival("/wallet/v1/credit", call, header="X-Signature")
    assert status == 404 and "balance" not in problem
    undo = {**call, "type": "rollback", "transaction_id": "s-g2", "round_id": "s-r1",
            "reference_transaction_id": "s-b1", "amount": "10.00"}  # fmt: skip
    assert rival("/wallet/v1/rollback", undo, header="X-Signature")[0] == 404
    debit = {**call, "type": "debit", "transaction_id": "s-g3", "round_id": "s-r3"}
    assert rival("/wallet/v1/debit", debit, header="X-Signature")[0] == 401  # no token
    with_token = {"X-Session-Token": tok}
    status, answer = gw.signed("/wallet/v1/debit", debit, header="X-Signature", extra=with_token)
    assert status == 200 and answer["balance"] == "40.00", answer
    status, answer = gw.signed("/wallet/v1/balance", generic, header="X-Signature",
                               extra=with_token)  # fmt: skip
    assert status == 200 and answer["balance"] == "40.00"
    # Hub's own win on its round is paid; nothing rival sent moved anything.
    win = hub("win", "s-w1", p, "s-r1", 2_000_000, reference_transaction_uuid="s-b1")
    assert gw.signed("/transaction/win", win)[1]["balance"] == 6_000_000
    assert cash(gw, p) == D("60.00")
    assert [k for k, _ in moved(gw, p)] == [
        "casino-debit:s-b1", "casino-debit:s-g3", "casino-credit:s-w1"]  # fmt: skip
    assert query(gw.settings, "SELECT transaction_id, partner FROM gateway_transactions "
                 "WHERE player_id = %s ORDER BY 1", (p,)) == [
        ("s-b1", "hub"), ("s-g1", "rival"), ("s-g2", "rival"), ("s-g3", "hub"),
        ("s-rb9", "rival"), ("s-w1", "hub"), ("s-w9", "rival")]  # fmt: skip


def test_tokens_revoked_by_the_command_are_refused(gw: Gateway) -> None:
    p = "gw-p6"

    def command(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "croupier", "gateway", "token", *args],
                             env=gw.env, cwd=ROOT, capture_output=True, text=True, timeout=60,
                             check=True)  # fmt: skip
        return out.stdout.strip()

    dsn, schema = gw.settings.pg_dsn.get_secret_value(), gw.settings.pg_schema
    first = command("issue", p, "--partner", "hub")
    second = issue(dsn, schema, p, 3600, partner="hub")
    rivals = issue(dsn, schema, p, 3600, partner="rival")

    def balance(token: str, key: rsa.RSAPrivateKey | None = None) -> str:
        body = {"user": p, "request_uuid": uuid.uuid4().hex, "token": token}
        return str(gw.signed("/user/balance", body, key=key)[1]["status"])

    assert balance(first) == balance(second) == balance(rivals, gw.rival) == "RS_OK"
    assert balance(rivals) == "RS_ERROR_INVALID_TOKEN"  # rival's token, hub's signature
    assert "revoked 1 token" in command("revoke", first)
    wait_for(lambda: balance(first) == "RS_ERROR_INVALID_TOKEN", timeout=15, what="revoked")
    assert balance(second) == "RS_OK"
    assert revoke(dsn, schema, token=first) == 0  # already gone
    assert command("revoke", "--player", p).startswith("revoked ")
    wait_for(lambda: balance(second) == balance(rivals, gw.rival) == "RS_ERROR_INVALID_TOKEN",
             timeout=15, what="every token of the player revoked")  # fmt: skip
    assert query(gw.settings, "SELECT count(*) FROM gateway_tokens WHERE player_id = %s",
                 (p,)) == [(0,)]  # fmt: skip
    TOKENS[p] = issue(dsn, schema, p, 3600, partner="hub")
    bad = subprocess.run([sys.executable, "-m", "croupier", "gateway", "token", "revoke"],
                         env=gw.env, cwd=ROOT, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "one of the two" in bad.stderr


def test_the_gateway_prunes_what_it_no_longer_needs(gw: Gateway) -> None:
    """Old rows go, recent ones stay; a pruned ticket's GET answers as an id never posted."""
    s, key = gw.settings, gw.keys["web"]
    leg = [("m-gw", "1x2", "home", "2.10")]
    produce(s, "bets", [("gw-p4", bet(f"pr-{i}", "gw-p4", "1.00", leg)) for i in (1, 2)])
    wait_for(lambda: query(s, "SELECT count(*) FROM bets WHERE bet_id IN ('pr-1', 'pr-2')")
             == [(2,)], timeout=30, what="the bets decided")  # fmt: skip
    day = "now() - interval '1 day' * %s"
    for bet_id, days in (("pr-1", 8), ("pr-2", 1), ("pr-3", 8), ("pr-4", 31)):
        query(s, "INSERT INTO gateway_tickets (bet_id, key_name, player_id, posted_at) "
              f"VALUES (%s, 'web', 'gw-p4', {day}) RETURNING 1", (bet_id, days))  # fmt: skip
    for tx, days in (("pr-t1", 8), ("pr-t2", 6)):
        query(s, "INSERT INTO gateway_transactions (transaction_id, partner, player_id, "
              f"round_id, claimed_at) VALUES (%s, 'hub', 'gw-p4', %s, {day}) RETURNING 1",
              (tx, tx, days))  # fmt: skip
    for digest, days in (("e1" * 32, 8), ("e2" * 32, 6)):
        query(s, "INSERT INTO gateway_tokens (token_hash, player_id, partner, issued_at, "
              f"expires_at) VALUES (%s, 'gw-p4', 'hub', {day}, {day}) RETURNING 1",
              (digest, days + 1, days))  # fmt: skip
    for sig, hours in (("e3" * 32, 3), ("e4" * 32, 1)):
        query(
            s,
            "INSERT INTO gateway_webhooks_seen (provider, signature, stamped_at) "
            "VALUES ('psp', %s, now() - interval '1 hour' * %s) RETURNING 1",
            (sig, hours),
        )
    # (Rows are inserted as the schema's owner: the application cannot backdate them.)

    made = ["e1" * 32, "e2" * 32, "e3" * 32, "e4" * 32]

    def left() -> list[tuple[Any, ...]]:
        return query(s, "SELECT 'ticket', bet_id FROM gateway_tickets WHERE bet_id LIKE 'pr-%%' "
                     "UNION ALL SELECT 'claim', transaction_id FROM gateway_transactions "
                     "WHERE transaction_id LIKE 'pr-%%' UNION ALL SELECT 'token', token_hash "
                     "FROM gateway_tokens WHERE token_hash = ANY(%s) UNION ALL "
                     "SELECT 'seen', signature FROM gateway_webhooks_seen "
                     "WHERE signature = ANY(%s) ORDER BY 1, 2", (made, made))  # fmt: skip

    # The gateway prunes on its own timer (every second here; hourly by default).
    wait_for(lambda: len(left()) <= 5, timeout=20, what="the gateway's pruning")
    assert left() == [("claim", "pr-t2"), ("seen", "e4" * 32), ("ticket", "pr-2"),
                      ("ticket", "pr-3"), ("token", "e2" * 32)]  # fmt: skip
    # A kept ticket still answers its key; a pruned one answers as an id never posted.
    status, _, decision = gw.request("GET", "/bets/pr-2", headers={"X-Api-Key": key})
    assert status == 200 and decision["bet_id"] == "pr-2"
    assert gw.request("GET", "/bets/pr-2", headers={"X-Api-Key": gw.keys["other"]})[0] == 404
    status, _, problem = gw.request("GET", "/bets/pr-1", headers={"X-Api-Key": key})
    assert status == 404 and problem["type"].endswith("no-decision")


def test_several_gateway_processes_share_one_port(gw: Gateway) -> None:
    """``gateway run --workers 2``: two whole gateways on one port (SO_REUSEPORT), each
    answering wallet calls and bet posts; a SIGTERM to the parent stops both."""
    port = free_port()
    log = gw.log.with_name("gateway-workers.log")
    log.unlink(missing_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "croupier", "gateway", "run", "--workers", "2"],
            env={**gw.env, "CROUPIER_GATEWAY_PORT": str(port)}, stdout=out,
            stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    try:
        wait_for(lambda: log.read_text(errors="replace").count(READY) >= 2, timeout=60,
                 what="two gateway processes")  # fmt: skip
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 2
        two = Gateway(gw.settings, gw.env, port, log, gw.partner, gw.stranger, gw.rival,
                      gw.keys, gw.worker)  # fmt: skip
        p = "gw-p3"
        balances = {
            two.signed("/transaction/bet", hub("bet", f"m-b{i}", p, f"m-r{i}", 100_000))[1][
                "status"] for i in range(6)
        }  # fmt: skip
        assert balances == {"RS_OK"}
        raw = bet("m-bet-1", p, "1.00", [("m-gw", "1x2", "home", "2.10")])
        assert two.request("POST", "/bets", raw, {"X-Api-Key": gw.keys["web"]})[0] == 202
        assert {two.request("GET", "/readyz")[0] for _ in range(6)} == {200}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert not any(Path(f"/proc/{c}").exists() for c in children)
