"""The operator's Ed25519 keys: made only when asked, read only when private, pinned to verify."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from croupier import cli, exits
from sinks.signing import (
    KeyFileError,
    Pin,
    fingerprint,
    generate,
    load_private_key,
    parse_pin,
    public_bytes,
    public_file,
)


def test_a_new_key_is_private_has_its_public_key_beside_it_and_is_never_replaced(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit" / "ed25519.pem"
    key = generate(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert public_file(path).read_text().strip() == public_bytes(key).hex()
    assert load_private_key(path).private_bytes_raw() == key.private_bytes_raw()
    with pytest.raises(KeyFileError, match="never replaced"):
        generate(path)
    assert load_private_key(path).private_bytes_raw() == key.private_bytes_raw()
    path.unlink()  # a lost key: its .pub still pins it, so no new key is made over it
    with pytest.raises(KeyFileError, match="without its private key"):
        generate(path)
    assert public_file(path).read_text().strip() == public_bytes(key).hex()


def test_a_missing_key_is_an_error_that_says_how_to_make_one_and_makes_none(
    tmp_path: Path,
) -> None:
    path = tmp_path / "nothing.pem"
    with pytest.raises(KeyFileError, match="croupier audit keygen"):
        load_private_key(path)
    assert not path.exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_others_may_read_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.pem"
    generate(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match=f"mode {mode:04o}.*chmod 600 {path}"):
        load_private_key(path)
    path.chmod(0o600)
    load_private_key(path)  # fixed as told


def test_a_key_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    path.write_bytes(pem)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="not an Ed25519 private key"):
        load_private_key(path)
    path.write_text("garbage")
    with pytest.raises(KeyFileError, match="readable PEM"):
        load_private_key(path)


def test_the_fingerprint_is_the_first_16_bytes_of_sha256_of_the_raw_key() -> None:
    public = public_bytes(Ed25519PrivateKey.from_private_bytes(bytes(32)))
    assert fingerprint(public) == hashlib.sha256(public).hexdigest()[:32]


def test_a_pin_reads_hex_base64_a_fingerprint_or_a_file(tmp_path: Path) -> None:
    key = generate(tmp_path / "k.pem")
    public = public_bytes(key)
    pem = tmp_path / "k-public.pem"
    pem.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    for text in (public.hex(), public.hex().upper(), base64.b64encode(public).decode(),
                 str(public_file(tmp_path / "k.pem")), str(pem)):  # fmt: skip
        assert parse_pin(text) == Pin(public), text
    assert parse_pin(fingerprint(public)) == Pin(None, fingerprint(public))
    for bad in ("", "abc", "00" * 31, str(tmp_path / "none.pub")):
        with pytest.raises(KeyFileError):
            parse_pin(bad)


def test_a_pin_accepts_only_its_key_whatever_key_the_data_names() -> None:
    mine, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    message = b"checkpoint document"
    for pin in (Pin(public_bytes(mine)), Pin(None, fingerprint(public_bytes(mine)))):
        assert pin.matches(public_bytes(mine)) and not pin.matches(public_bytes(other))
        assert pin.verifies(public_bytes(mine), mine.sign(message), message)
        # Another key's signature, with its own key named beside it, is refused...
        assert not pin.verifies(public_bytes(other), other.sign(message), message)
        # ...and so is a signature of something else, or bytes that are not a signature.
        assert not pin.verifies(public_bytes(mine), mine.sign(b"other"), message)
        assert not pin.verifies(public_bytes(mine), b"\0" * 64, message)
    # A pin of the key itself never uses the named key, even a named key that is garbage.
    assert Pin(public_bytes(mine)).verifies(b"junk", mine.sign(message), message)


def test_audit_keygen_makes_each_key_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CROUPIER_STACK_DIR", str(tmp_path / "no-stack"))
    monkeypatch.setenv("CROUPIER_AUDIT_KEY", str(tmp_path / "a" / "audit.pem"))
    monkeypatch.setenv("CROUPIER_REPORT_SIGNING_KEY", str(tmp_path / "r" / "report.pem"))
    assert cli.main(["audit", "keygen"]) == exits.EXIT_OK
    out = capsys.readouterr().out
    audit = public_bytes(load_private_key(tmp_path / "a" / "audit.pem"))
    assert f"fingerprint {fingerprint(audit)}" in out
    assert f"CROUPIER_AUDIT_PUBLIC_KEY={audit.hex()}" in out
    assert not (tmp_path / "r" / "report.pem").exists()  # one key per purpose
    assert cli.main(["audit", "keygen", "--reports"]) == exits.EXIT_OK
    report = public_bytes(load_private_key(tmp_path / "r" / "report.pem"))
    assert (
        report != audit and f"CROUPIER_REPORT_PUBLIC_KEY={report.hex()}" in capsys.readouterr().out
    )
    assert cli.main(["audit", "keygen"]) == exits.EXIT_FAILED
    assert "never replaced" in capsys.readouterr().err
    assert public_bytes(load_private_key(tmp_path / "a" / "audit.pem")) == audit


def test_verify_without_a_pinned_key_refuses_before_anything_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CROUPIER_STACK_DIR", str(tmp_path / "no-stack"))
    monkeypatch.delenv("CROUPIER_AUDIT_PUBLIC_KEY", raising=False)
    monkeypatch.setenv("CROUPIER_PG_DSN", "postgresql://u@127.0.0.1:1/x")
    assert cli.main(["audit", "verify"]) == exits.EXIT_USAGE
    assert "no pinned public key" in capsys.readouterr().err
    bundle = tmp_path / "b.jsonl"
    bundle.write_text("{}\n")
    assert cli.main(["audit", "verify", "--bundle", str(bundle)]) == exits.EXIT_USAGE
    assert "no pinned public key" in capsys.readouterr().err
    assert cli.main(["audit", "verify", "--public-key", "not a key"]) == exits.EXIT_USAGE
    assert "64 hex digits" in capsys.readouterr().err
