"""Jurisdiction policies as data: the shipped files, every way a file can be wrong, the CLI."""

from __future__ import annotations

import ast
import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.policies import DEFAULT_POLICY_DIR, load_policies
from config.settings import Settings
from croupier.cli import main
from rules.policy import JurisdictionPolicy, Policies, PolicyError, parse_policy

ROOT = Path(__file__).resolve().parents[2]
UK_TEXT = (DEFAULT_POLICY_DIR / "UK.toml").read_text(encoding="utf-8")

# jurisdiction: (regulator, minimum_age, cooling-off h, geolocation required, buffer s, format)
EXPECTED = {
    "UK": ("Gambling Commission", 18, 24, False, 0, "json"),
    "DK": ("Spillemyndigheden", 18, 24, False, 0, "safe"),
    "ES": ("Dirección General de Ordenación del Juego", 18, 72, False, 0, "sci"),
    "NJ": ("Division of Gaming Enforcement", 21, 72, True, 60, "json"),
}


@pytest.fixture(scope="module")
def shipped() -> Policies:
    return load_policies(DEFAULT_POLICY_DIR)


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def uk(old: str, new: str) -> str:
    """The shipped UK policy with one edit (which must apply)."""
    assert old in UK_TEXT, old
    return UK_TEXT.replace(old, new, 1)


def load_error(directory: Path) -> str:
    with pytest.raises(PolicyError) as caught:
        load_policies(directory)
    return str(caught.value)


# --- the shipped policies ----------------------------------------------------------------


def test_the_shipped_directory_holds_exactly_the_four_licences(shipped: Policies) -> None:
    assert shipped.jurisdictions == ("DK", "ES", "NJ", "UK")
    assert list(shipped) == ["DK", "ES", "NJ", "UK"]
    assert len(shipped) == 4
    assert DEFAULT_POLICY_DIR == ROOT / "policies"


@pytest.mark.parametrize("jurisdiction", sorted(EXPECTED))
def test_shipped_policy_values(shipped: Policies, jurisdiction: str) -> None:
    regulator, age, cooling_off, geo_required, buffer, report_format = EXPECTED[jurisdiction]
    policy = shipped[jurisdiction]
    assert policy.jurisdiction == jurisdiction
    assert policy.version == 1
    assert policy.effective_from == date(2026, 1, 1)
    assert policy.regulator == regulator
    assert policy.minimum_age == age
    assert policy.limits.periods == frozenset({"day", "week", "month"})
    assert policy.limits.cooling_off == timedelta(hours=cooling_off)
    assert policy.sessions.required is True
    assert policy.sessions.reality_check == timedelta(minutes=60)
    assert policy.geolocation.required is geo_required
    assert policy.geolocation.buffer == timedelta(seconds=buffer)
    assert policy.reporting.topic == f"reports.{jurisdiction}"
    assert policy.reporting.format == report_format


@pytest.mark.parametrize("jurisdiction", sorted(EXPECTED))
def test_shipped_files_say_what_they_model_and_that_it_needs_checking(jurisdiction: str) -> None:
    text = (DEFAULT_POLICY_DIR / f"{jurisdiction}.toml").read_text(encoding="utf-8")
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "Modelled on public rules" in header
    assert "checked against the regulator's current rules" in header


def test_policies_read_like_a_mapping(shipped: Policies) -> None:
    assert "UK" in shipped
    assert "FR" not in shipped
    assert shipped.get("FR") is None
    assert shipped.get("NJ") is shipped["NJ"]
    with pytest.raises(KeyError):
        shipped["FR"]
    assert Policies([shipped["UK"], shipped["DK"]]).jurisdictions == ("DK", "UK")
    assert Policies().jurisdictions == ()


def test_policies_are_immutable(shipped: Policies) -> None:
    policy = shipped["UK"]
    with pytest.raises(ValidationError):
        policy.minimum_age = 16  # type: ignore[misc]  # frozen: the point of the test
    with pytest.raises(ValidationError):
        policy.limits.cooling_off_hours = 0  # type: ignore[misc]  # frozen: the point of the test
    assert isinstance(policy.limits.periods, frozenset)
    with pytest.raises(TypeError):
        shipped["FR"] = policy  # type: ignore[index]  # no __setitem__: the point of the test
    with pytest.raises(AttributeError):
        shipped.extra = 1
    with pytest.raises(AttributeError):
        del shipped._by_jurisdiction
    assert shipped.jurisdictions == ("DK", "ES", "NJ", "UK")


def test_a_policy_survives_a_json_round_trip(shipped: Policies) -> None:
    for policy in shipped.values():
        doc = policy.model_dump(mode="json")
        assert doc["limits"]["periods"] == ["day", "week", "month"]
        assert JurisdictionPolicy.model_validate_json(json.dumps(doc)) == policy


def test_the_rules_package_stays_pure() -> None:
    tree = ast.parse((ROOT / "rules" / "policy.py").read_text(encoding="utf-8"))
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        for name in (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    }
    assert not imported & {"croupier", "sinks", "streams", "topologies", "os", "pathlib"}


# --- bad files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "field", "says"),
    [
        (("[limits]\n", "[limits]\nmax_deposit = 100\n"), "limits.max_deposit", "unknown key"),
        (("regulator =", "licence = 1\nregulator ="), "licence", "unknown key"),
        (("minimum_age = 18", 'minimum_age = "18"'), "minimum_age", "valid integer"),
        (("required = true", 'required = "yes"'), "sessions.required", "valid boolean"),
        (("effective_from = 2026-01-01", 'effective_from = "soon"'), "effective_from", "date"),
        (("minimum_age = 18", "minimum_age = 15"), "minimum_age", "greater than or equal to 16"),
        (
            ("cooling_off_hours = 24", "cooling_off_hours = -1"),
            "limits.cooling_off_hours",
            "greater than or equal to 0",
        ),
        (
            ("periods = [", 'periods = ["hour", '),
            "limits.periods[0]",
            "'day', 'week' or 'month' (got 'hour')",
        ),
        (('format = "json"', 'format = "csv"'), "reporting.format", "'json', 'safe' or 'sci'"),
        (("[sessions]\nrequired = true\n", "[sessions]\n"), "sessions.required", "missing key"),
        (("[sessions]\n", "[session]\n"), "sessions", "missing table"),
        (('topic = "reports.UK"', 'topic = "reports.DK"'), "reporting.topic", "reports.UK"),
    ],
)
def test_a_bad_field_names_the_file_and_the_field(
    tmp_path: Path, edit: tuple[str, str], field: str, says: str
) -> None:
    write(tmp_path, "UK.toml", uk(*edit))
    message = load_error(tmp_path)
    assert message.startswith("UK.toml: invalid jurisdiction policy")
    line = next(ln for ln in message.splitlines() if ln.strip().startswith(f"{field}:"))
    assert says in line
    assert "Fix the field(s) above in UK.toml" in message


def test_an_unknown_key_lists_the_keys_allowed_there(tmp_path: Path) -> None:
    write(tmp_path, "UK.toml", uk("[limits]\n", "[limits]\nperiod = 'day'\n"))
    message = load_error(tmp_path)
    assert "limits.period: unknown key (allowed here: periods, cooling_off_hours)" in message


def test_a_missing_section_names_the_table(tmp_path: Path) -> None:
    text = uk('[reporting]\ntopic = "reports.UK"\nformat = "json"\n', "")
    write(tmp_path, "UK.toml", text)
    message = load_error(tmp_path)
    assert "UK.toml" in message
    assert "  reporting: missing table" in message
    assert "[reporting]" in message  # the layout reminder


def test_a_mismatched_report_topic_says_what_it_must_be(tmp_path: Path) -> None:
    write(tmp_path, "UK.toml", uk('topic = "reports.UK"', 'topic = "reports"'))
    message = load_error(tmp_path)
    assert "reporting.topic: is 'reports' but must be 'reports.UK'" in message


def test_a_file_named_for_another_jurisdiction_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "DK.toml", UK_TEXT)
    message = load_error(tmp_path)
    assert message.startswith("DK.toml:")
    assert "jurisdiction is 'UK'" in message
    assert "rename the file to UK.toml" in message


def test_invalid_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    write(tmp_path, "UK.toml", uk("minimum_age = 18", "minimum_age = "))
    message = load_error(tmp_path)
    assert message.startswith("UK.toml: not valid TOML")
    line = UK_TEXT.splitlines().index("minimum_age = 18") + 1
    assert f"line {line}," in message


def test_one_bad_file_among_good_ones_is_named(tmp_path: Path) -> None:
    for source in DEFAULT_POLICY_DIR.glob("*.toml"):
        write(tmp_path, source.name, source.read_text(encoding="utf-8"))
    nj = (tmp_path / "NJ.toml").read_text(encoding="utf-8")
    write(tmp_path, "NJ.toml", nj.replace("buffer_seconds = 60", "buffer_seconds = 1.5"))
    message = load_error(tmp_path)
    assert message.startswith("NJ.toml:")
    assert "geolocation.buffer_seconds:" in message


def test_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "README.md", "not a policy")
    message = load_error(tmp_path)
    assert str(tmp_path) in message
    assert "no policy files (*.toml)" in message


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    message = load_error(missing)
    assert str(missing) in message
    assert "no such policy directory" in message
    assert "CROUPIER_POLICY_DIR" in message


def test_a_duplicate_jurisdiction_is_refused(shipped: Policies) -> None:
    newer = shipped["UK"].model_copy(update={"version": 2})
    with pytest.raises(PolicyError) as caught:
        Policies([shipped["UK"], shipped["DK"], newer])
    message = str(caught.value)
    assert "duplicate jurisdiction 'UK'" in message
    assert "versions 1 and 2" in message


def test_parse_policy_names_the_source_it_is_given() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy("jurisdiction = 'UK'\n", "somewhere/UK.toml")
    assert caught.value.source == "somewhere/UK.toml"
    assert str(caught.value).startswith("somewhere/UK.toml: invalid jurisdiction policy")
    assert "  limits: missing table" in str(caught.value)


def test_the_policy_directory_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CROUPIER_POLICY_DIR", raising=False)
    assert Settings().policy_dir == DEFAULT_POLICY_DIR
    monkeypatch.setenv("CROUPIER_POLICY_DIR", "")
    assert Settings().policy_dir == DEFAULT_POLICY_DIR
    monkeypatch.setenv("CROUPIER_POLICY_DIR", str(tmp_path))
    assert Settings().policy_dir == tmp_path


# --- the command line --------------------------------------------------------------------


@pytest.fixture
def no_policy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CROUPIER_POLICY_DIR", raising=False)


@pytest.mark.usefixtures("no_policy_env")
def test_policies_list_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policies", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "jurisdiction",
        "version",
        "effective_from",
        "minimum_age",
        "cooling_off_h",
        "reality_check_min",
        "geolocation",
        "session",
        "reporting",
    ]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == ["DK", "ES", "NJ", "UK"]
    assert rows["NJ"] == [
        "NJ", "1", "2026-01-01", "21", "72", "60", "required", "required", "reports.NJ", "(json)"
    ]  # fmt: skip
    assert rows["DK"][6:] == ["-", "required", "reports.DK", "(safe)"]


@pytest.mark.usefixtures("no_policy_env")
def test_policies_list_json_prints_the_full_policies(
    capsys: pytest.CaptureFixture[str], shipped: Policies
) -> None:
    assert main(["policies", "list", "--json"]) == 0
    docs = json.loads(capsys.readouterr().out)
    assert [d["jurisdiction"] for d in docs] == ["DK", "ES", "NJ", "UK"]
    assert docs == [p.model_dump(mode="json") for p in shipped.values()]
    assert docs[2]["geolocation"] == {"required": True, "buffer_seconds": 60}


def test_policies_list_reads_the_directory_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "env", "UK.toml", UK_TEXT)
    monkeypatch.setenv("CROUPIER_POLICY_DIR", str(tmp_path / "env"))
    assert main(["policies", "list", "--json"]) == 0
    assert [d["jurisdiction"] for d in json.loads(capsys.readouterr().out)] == ["UK"]

    write(tmp_path / "flag", "DK.toml", (DEFAULT_POLICY_DIR / "DK.toml").read_text("utf-8"))
    assert main(["policies", "list", "--json", "--dir", str(tmp_path / "flag")]) == 0
    assert [d["jurisdiction"] for d in json.loads(capsys.readouterr().out)] == ["DK"]

    assert main(["policies", "list", "--dir", str(tmp_path / "nowhere")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no such policy directory" in captured.err


@pytest.mark.usefixtures("no_policy_env")
def test_policies_check_passes_on_the_shipped_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policies", "check"]) == 0
    assert capsys.readouterr().out.startswith("4 policies ok")


def test_policies_check_fails_with_the_file_and_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "UK.toml", uk("[geolocation]\n", "[geolocation]\nradius_km = 5\n"))
    assert main(["policies", "check", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("croupier: UK.toml: invalid jurisdiction policy")
    assert "geolocation.radius_km: unknown key" in captured.err


def test_policies_check_uses_the_environment_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CROUPIER_POLICY_DIR", str(tmp_path))
    assert main(["policies", "check"]) == 2
    assert "no policy files" in capsys.readouterr().err
    write(tmp_path, "UK.toml", UK_TEXT)
    assert main(["policies", "check"]) == 0
    assert capsys.readouterr().out.startswith("1 policies ok")


def test_a_worker_refuses_to_start_on_a_bad_policy_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "UK.toml", uk("[geolocation]\n", "[geolocation]\nradius_km = 5\n"))
    monkeypatch.setenv("CROUPIER_POLICY_DIR", str(tmp_path))
    monkeypatch.setenv("CROUPIER_DATA_DIR", str(tmp_path / "faust"))
    assert main(["worker"]) == 2  # before it connects to anything
    err = capsys.readouterr().err
    assert err.startswith("croupier worker: UK.toml: invalid jurisdiction policy")
    assert "geolocation.radius_km: unknown key" in err
