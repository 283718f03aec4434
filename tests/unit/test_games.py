"""The game registry: the shipped sample catalogue, check(), every way a file can be wrong."""

from __future__ import annotations

import ast
import hashlib
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.games import DEFAULT_CATALOGUE, GAME_COLUMNS, load_catalogue, table_rows, to_json
from config.policies import DEFAULT_POLICY_DIR, load_policies
from rules.games import Catalogue, CatalogueError, Certification, Game, parse_catalogue

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2027, 1, 4)  # a fixed day, so the tests do not age with the sample certificates
SAMPLE_HASH = "ab" * 32

# Two games, small enough to read in a failing test; edits below change one thing each.
MINI = f"""\
[[games]]
game_id = "alpha"
name = "Alpha"
provider = "Provider A"
type = "slot"

[[games.certifications]]
test_lab = "GLI"
certificate_id = "CERT-A-1"
jurisdictions = ["UK", "DK"]
rtp = 96.50
build_hash = "{SAMPLE_HASH}"
issued = 2024-01-15
expires = 2027-01-15

[[games]]
game_id = "beta"
name = "Beta"
provider = "Provider B"
type = "table"

[[games.certifications]]
test_lab = "BMM Testlabs"
certificate_id = "CERT-B-1"
jurisdictions = ["NJ"]
rtp = 99.28
build_hash = "{SAMPLE_HASH}"
issued = 2023-03-01
"""


def mini(old: str, new: str, count: int = 1) -> str:
    """``MINI`` with an edit (which must apply)."""
    assert old in MINI, old
    return MINI.replace(old, new, count)


def parse_error(text: str, jurisdictions: set[str] | None = None) -> str:
    with pytest.raises(CatalogueError) as caught:
        parse_catalogue(text, "test/catalogue.toml", jurisdictions=jurisdictions)
    assert caught.value.source == "test/catalogue.toml"
    return str(caught.value)


def line_for(message: str, field: str) -> str:
    return next(ln for ln in message.splitlines() if ln.strip().startswith(f"{field}:"))


@pytest.fixture(scope="module")
def shipped() -> Catalogue:
    return load_catalogue()


# --- the shipped sample catalogue --------------------------------------------------------


def test_the_shipped_catalogue_loads_from_the_source_tree(shipped: Catalogue) -> None:
    assert DEFAULT_CATALOGUE == ROOT / "games" / "catalogue.toml"
    assert 10 <= len(shipped.games) <= 15
    providers = {g.provider for g in shipped.games.values()}
    assert {"NetEnt", "Pragmatic Play", "Evolution", "Play'n GO", "Red Tiger", "IGT"} <= providers
    assert list(shipped.games) == sorted(shipped.games)


def test_every_shipped_jurisdiction_has_a_policy(shipped: Catalogue) -> None:
    licensed = load_policies(DEFAULT_POLICY_DIR).jurisdictions
    named = {j for g in shipped.games.values() for c in g.certifications for j in c.jurisdictions}
    assert named == set(licensed)
    assert load_catalogue(jurisdictions=licensed) == shipped


def test_the_shipped_file_says_it_is_a_sample() -> None:
    text = DEFAULT_CATALOGUE.read_text(encoding="utf-8")
    header = "\n".join(ln for ln in text.splitlines() if ln.startswith("#"))
    assert "SAMPLE" in header
    assert "NOT\n# real certificates" in header


def test_croupier_dice_is_ours_and_certified_everywhere(shipped: Catalogue) -> None:
    dice = shipped.get("croupier-dice")
    assert dice is not None
    assert (dice.name, dice.provider, dice.type, dice.rng) == (
        "Croupier Dice",
        "Croupier",
        "dice",
        "croupier",
    )
    for jurisdiction in ("UK", "DK", "ES", "NJ"):
        certification = shipped.certification_for("croupier-dice", jurisdiction, date(2027, 1, 1))
        assert certification is not None
        assert certification.rtp == Decimal("97.00")
    assert [g.game_id for g in shipped.games.values() if g.rng == "croupier"] == ["croupier-dice"]


def test_our_rng_runs_the_build_the_lab_certified(shipped: Catalogue) -> None:
    """The latest certificate of a game our RNG draws must name our generator's hash."""
    generator = ROOT / "rng" / "generator.py"
    for game in shipped.games.values():
        if game.rng != "croupier":
            continue
        latest = max(game.certifications, key=lambda c: c.issued)
        digest = hashlib.sha256(generator.read_bytes()).hexdigest()
        assert latest.build_hash == digest, f"{game.game_id}: {generator} is not the build"


@pytest.mark.parametrize(
    ("game_id", "jurisdiction", "on", "expected"),
    [
        ("netent-starburst", "UK", DAY, None),
        ("netent-starburst", "NJ", DAY, None),
        ("croupier-dice", "NJ", DAY, None),
        ("no-such-game", "UK", DAY, "unknown_game"),
        # the gaps on purpose
        ("playngo-reactoonz", "UK", DAY, None),
        ("playngo-reactoonz", "NJ", DAY, "game_not_certified"),
        ("playngo-reactoonz", "ES", DAY, "game_not_certified"),
        ("redtiger-gonzos-quest-megaways", "ES", DAY, None),
        ("redtiger-gonzos-quest-megaways", "UK", DAY, "game_not_certified"),
        ("igt-wolf-run", "UK", DAY, None),
        ("igt-wolf-run", "NJ", DAY, "game_not_certified"),  # expired 2025-05-12
        ("igt-wolf-run", "NJ", date(2025, 5, 11), None),  # its last day
        ("igt-wolf-run", "NJ", date(2025, 5, 12), "game_not_certified"),  # the expiry day
        ("croupier-dice", "UK", date(2026, 11, 22), "game_not_certified"),  # not yet issued
        ("croupier-dice", "UK", date(2026, 11, 23), None),  # the issue day
        ("netent-starburst", "FR", DAY, "game_not_certified"),  # no licence there
    ],
)
def test_check_on_the_shipped_catalogue(
    shipped: Catalogue, game_id: str, jurisdiction: str, on: date, expected: str | None
) -> None:
    assert shipped.check(game_id, jurisdiction, on) == expected
    certification = shipped.certification_for(game_id, jurisdiction, on)
    assert (certification is None) == (expected is not None)


def test_the_latest_issued_certificate_is_the_one_that_counts(shipped: Catalogue) -> None:
    old = shipped.certification_for("netent-starburst", "UK", date(2024, 1, 1))
    new = shipped.certification_for("netent-starburst", "UK", DAY)
    assert old is not None
    assert new is not None
    assert old.certificate_id == "SAMPLE-ECO-STB-2202-014"
    assert new.certificate_id == "SAMPLE-ECO-STB-2506-002"
    assert new.build_hash != old.build_hash


def test_a_certificate_is_per_jurisdiction_even_at_another_rtp(shipped: Catalogue) -> None:
    es = shipped.certification_for("pragmatic-gates-of-olympus", "ES", DAY)
    uk = shipped.certification_for("pragmatic-gates-of-olympus", "UK", DAY)
    assert es is not None
    assert uk is not None
    assert (es.rtp, uk.rtp) == (Decimal("95.51"), Decimal("96.50"))


def test_a_game_awaiting_certification_is_not_certified() -> None:
    text = mini('jurisdictions = ["NJ"]', 'jurisdictions = ["NJ"]') + (
        '\n[[games]]\ngame_id = "gamma"\nname = "Gamma"\nprovider = "C"\ntype = "other"\n'
        "certifications = []\n"
    )
    catalogue = parse_catalogue(text, "x.toml")
    assert catalogue.check("gamma", "UK", DAY) == "game_not_certified"
    assert catalogue.get("gamma") is not None
    assert catalogue.get("delta") is None


def test_models_are_frozen(shipped: Catalogue) -> None:
    game = shipped.games["netent-starburst"]
    with pytest.raises(ValidationError):
        game.name = "Moonburst"  # type: ignore[misc]  # frozen: the point of the test
    with pytest.raises(ValidationError):
        game.certifications[0].rtp = Decimal(99)  # type: ignore[misc]  # frozen: the point
    assert isinstance(game.certifications, tuple)


def test_values_parse_exactly() -> None:
    catalogue = parse_catalogue(mini("rtp = 96.50", "rtp = 97"), "x.toml")
    alpha = catalogue.games["alpha"].certifications[0]
    assert alpha.rtp == Decimal("97.00")
    assert str(alpha.rtp) == "97.00"  # a whole number is shown as certificates state it
    beta = catalogue.games["beta"].certifications[0]
    assert str(beta.rtp) == "99.28"
    assert (beta.issued, beta.expires) == (date(2023, 3, 1), None)
    assert alpha.jurisdictions == ("UK", "DK")


def test_a_catalogue_built_in_code_is_checked_too(shipped: Catalogue) -> None:
    starburst = shipped.games["netent-starburst"]
    with pytest.raises(ValidationError, match="key it by its game_id"):
        Catalogue(games={"starburst": starburst})
    twin = starburst.model_copy(update={"game_id": "netent-starburst-2"})
    with pytest.raises(ValidationError, match="held more than once"):
        Catalogue(games={starburst.game_id: starburst, twin.game_id: twin})


def test_a_game_survives_a_json_round_trip(shipped: Catalogue) -> None:
    docs = to_json(shipped)
    assert [d["game_id"] for d in docs] == sorted(shipped.games)
    for doc in docs:
        game = Game.model_validate_json(json.dumps(doc))
        assert game == shipped.games[doc["game_id"]]
    wolf = next(d for d in docs if d["game_id"] == "igt-wolf-run")
    assert wolf["certifications"][1]["rtp"] == "94.98"
    assert wolf["certifications"][1]["expires"] == "2025-05-12"
    assert wolf["certifications"][0]["expires"] is None


def test_the_rules_module_stays_pure() -> None:
    tree = ast.parse((ROOT / "rules" / "games.py").read_text(encoding="utf-8"))
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
        (("rtp = 96.50", "rtp = 100"), "games[0].certifications[0].rtp", "not including, 100"),
        (("rtp = 96.50", "rtp = 100.5"), "games[0].certifications[0].rtp", "from 80 up to"),
        (("rtp = 96.50", "rtp = 79.99"), "games[0].certifications[0].rtp", "from 80 up to"),
        (("rtp = 96.50", "rtp = 0.965"), "games[0].certifications[0].rtp", "write 96.50 for 96.5%"),
        (("rtp = 96.50", "rtp = 96.555"), "games[0].certifications[0].rtp", "two decimals"),
        (("rtp = 96.50", "rtp = nan"), "games[0].certifications[0].rtp", "finite number"),
        (("rtp = 96.50", "rtp = inf"), "games[0].certifications[0].rtp", "finite number"),
        (("rtp = 96.50", 'rtp = "96.50"'), "games[0].certifications[0].rtp", "not str"),
        (("rtp = 96.50", "rtp = true"), "games[0].certifications[0].rtp", "not bool"),
        (
            (f'build_hash = "{SAMPLE_HASH}"', f'build_hash = "{SAMPLE_HASH.upper()}"'),
            "games[0].certifications[0].build_hash",
            "64 lowercase hex digits",
        ),
        (
            (f'build_hash = "{SAMPLE_HASH}"', 'build_hash = "abc123"'),
            "games[0].certifications[0].build_hash",
            "SHA-256 of the certified build",
        ),
        (
            ("expires = 2027-01-15", "expires = 2023-01-15"),
            "games[0].certifications[0].expires",
            "must be after issued (2024-01-15)",
        ),
        (
            ("expires = 2027-01-15", "expires = 2024-01-15"),
            "games[0].certifications[0].expires",
            "must be after issued",
        ),
        (
            ("issued = 2024-01-15", 'issued = "2024-01-15"'),
            "games[0].certifications[0].issued",
            "valid date",
        ),
        (
            ('jurisdictions = ["UK", "DK"]', 'jurisdictions = ["UK", "uk"]'),
            "games[0].certifications[0].jurisdictions",
            "2-3 capital letters",
        ),
        (
            ('jurisdictions = ["UK", "DK"]', 'jurisdictions = ["UK", "DK", "UK"]'),
            "games[0].certifications[0].jurisdictions",
            "lists UK more than once",
        ),
        (
            ('jurisdictions = ["UK", "DK"]', "jurisdictions = []"),
            "games[0].certifications[0].jurisdictions",
            "at least 1 item",
        ),
        (
            ('test_lab = "GLI"', 'test_lab = "Gaming Labs"'),
            "games[0].certifications[0].test_lab",
            "'GLI', 'BMM Testlabs'",
        ),
        (
            ('certificate_id = "CERT-A-1"', 'certificate_id = "A 1"'),
            "games[0].certifications[0].certificate_id",
            "as printed on the certificate",
        ),
        (('type = "slot"', 'type = "slots"'), "games[0].type", "'slot', 'table', 'live'"),
        (('game_id = "alpha"', 'game_id = "al pha"'), "games[0].game_id", "1-128 letters"),
        (('name = "Alpha"', 'name = ""'), "games[0].name", "at least 1 character"),
        (
            ('type = "slot"', 'type = "slot"\nrng = "ours"'),
            "games[0].rng",
            "'provider' or 'croupier'",
        ),
    ],
)
def test_a_bad_field_names_the_file_and_the_field(
    edit: tuple[str, str], field: str, says: str
) -> None:
    message = parse_error(mini(*edit))
    assert message.startswith("test/catalogue.toml: invalid game catalogue:")
    line = line_for(message, field)
    assert says in line
    assert "Fix the field(s) above in test/catalogue.toml" in message


def test_a_bad_field_names_its_game() -> None:
    message = parse_error(mini("rtp = 99.28", "rtp = 101"))
    assert line_for(message, "games[1].certifications[0].rtp").endswith("[game 'beta']")


@pytest.mark.parametrize(
    ("edit", "field", "allowed"),
    [
        (("[[games]]\n", "version = 1\n[[games]]\n"), "version", "games"),
        (('type = "slot"', 'type = "slot"\nrtp = 96.5'), "games[0].rtp", "game_id, name"),
        (
            ("issued = 2024-01-15", "issued = 2024-01-15\nseal = 'x'"),
            "games[0].certifications[0].seal",
            "test_lab, certificate_id, jurisdictions, rtp, build_hash, issued, expires",
        ),
    ],
)
def test_an_unknown_key_lists_the_keys_allowed_there(
    edit: tuple[str, str], field: str, allowed: str
) -> None:
    message = parse_error(mini(*edit))
    assert f"unknown key (allowed here: {allowed}" in line_for(message, field)
    assert "[[games.certifications]]" in message  # the layout reminder


def test_a_missing_key_is_named() -> None:
    message = parse_error(mini('provider = "Provider B"\n', ""))
    assert (
        line_for(message, "games[1].provider") == "  games[1].provider: missing key [game 'beta']"
    )


def test_a_duplicate_game_id_is_refused() -> None:
    message = parse_error(mini('game_id = "beta"', 'game_id = "alpha"'))
    line = line_for(message, "games[1].game_id")
    assert "'alpha' is also the id of games[0]; game ids must be unique" in line


def test_a_duplicate_certificate_id_is_refused() -> None:
    message = parse_error(mini('certificate_id = "CERT-B-1"', 'certificate_id = "CERT-A-1"'))
    line = line_for(message, "games[1].certifications[0].certificate_id")
    assert "'CERT-A-1' is also the id of games[0].certifications[0]" in line
    assert "certificate ids must be unique [game 'beta']" in line


def test_every_clash_is_reported_at_once() -> None:
    text = mini('game_id = "beta"', 'game_id = "alpha"')
    text = text.replace('certificate_id = "CERT-B-1"', 'certificate_id = "CERT-A-1"')
    message = parse_error(text, jurisdictions={"UK", "DK"})
    assert "game ids must be unique" in message
    assert "certificate ids must be unique" in message
    assert "games[1].certifications[0].jurisdictions[0]: 'NJ' is not a jurisdiction" in message


def test_a_jurisdiction_without_a_licence_is_refused_when_licences_are_given() -> None:
    parse_catalogue(MINI, "x.toml")  # no licences given: any well-formed code
    message = parse_error(MINI, jurisdictions={"UK", "NJ"})
    line = line_for(message, "games[0].certifications[0].jurisdictions[1]")
    assert "'DK' is not a jurisdiction Croupier is licensed in (NJ, UK) [game 'alpha']" in line


def test_an_empty_catalogue_is_refused() -> None:
    message = parse_error("# nothing yet\n")
    assert "  games: missing key" in message
    message = parse_error("games = []\n")
    assert "games: Tuple should have at least 1 item" in message


def test_invalid_toml_names_the_file_and_the_line() -> None:
    message = parse_error(mini("rtp = 96.50", "rtp = "))
    assert message.startswith("test/catalogue.toml: not valid TOML")
    line = MINI.splitlines().index("rtp = 96.50") + 1
    assert f"line {line}," in message


def test_load_catalogue_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text(mini("rtp = 96.50", "rtp = 1000"), encoding="utf-8")
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(path)
    assert str(caught.value).startswith(f"{path}: invalid game catalogue")
    assert caught.value.source == str(path)
    path.write_text(MINI, encoding="utf-8")
    assert set(load_catalogue(path).games) == {"alpha", "beta"}


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(missing)
    assert str(caught.value).startswith(f"{missing}: no such game catalogue file")


def test_a_certification_built_in_code_rejects_a_float_rtp() -> None:
    fields = {
        "test_lab": "GLI",
        "certificate_id": "CERT-1",
        "jurisdictions": ("UK",),
        "build_hash": SAMPLE_HASH,
        "issued": date(2024, 1, 1),
    }
    assert Certification.model_validate({**fields, "rtp": Decimal("96.5")}).rtp == Decimal("96.50")
    with pytest.raises(ValidationError, match="not float"):
        Certification.model_validate({**fields, "rtp": 96.5})


# --- rendering ---------------------------------------------------------------------------


def render_table(catalogue: Catalogue, jurisdiction: str | None = None, **on: date) -> str:
    """What ``croupier games list`` prints when piped."""
    from croupier.commands.output import plain_table

    return plain_table(GAME_COLUMNS, table_rows(catalogue, jurisdiction, **on))


def rows(table: str) -> dict[str, list[str]]:
    """The table's rows by game id, split on the two-space column gaps."""
    split = [[c.strip() for c in ln.split("  ") if c.strip()] for ln in table.splitlines()]
    assert split[0] == ["game_id", "name", "provider", "type", "rtp", "certified"]
    return {r[0]: r for r in split[1:]}


def test_render_table_shows_every_game_and_where_it_runs(shipped: Catalogue) -> None:
    table = rows(render_table(shipped, on=DAY))
    assert list(table) == sorted(shipped.games)
    assert table["croupier-dice"] == ["croupier-dice", "Croupier Dice", "Croupier", "dice",
                                      "97.00", "DK,ES,NJ,UK"]  # fmt: skip
    assert table["pragmatic-gates-of-olympus"][4:] == ["95.51/96.50", "DK,ES,NJ,UK"]
    assert table["igt-wolf-run"][4:] == ["94.98", "UK"]
    assert table["redtiger-gonzos-quest-megaways"][4:] == ["96.00", "ES"]
    before = rows(render_table(shipped, on=date(2021, 1, 1)))
    assert before["croupier-dice"][4:] == ["-", "-"]
    assert before["igt-wolf-run"][4:] == ["94.98", "NJ"]


def test_render_table_for_one_jurisdiction_lists_what_may_run_there(shipped: Catalogue) -> None:
    nj = rows(render_table(shipped, "NJ", on=DAY))
    assert "playngo-reactoonz" not in nj
    assert "redtiger-gonzos-quest-megaways" not in nj
    assert "igt-wolf-run" not in nj
    assert "croupier-dice" in nj
    es = rows(render_table(shipped, "ES", on=DAY))
    assert es["pragmatic-gates-of-olympus"][4] == "95.51"
    assert rows(render_table(shipped, "FR", on=DAY)) == {}
    assert render_table(shipped).startswith("game_id")  # today, whatever day that is


def test_to_json_for_one_jurisdiction(shipped: Catalogue) -> None:
    ids = [d["game_id"] for d in to_json(shipped, "NJ", on=DAY)]
    assert ids == [g for g in sorted(shipped.games) if shipped.check(g, "NJ", DAY) is None]
    assert "igt-wolf-run" in [d["game_id"] for d in to_json(shipped, "NJ", on=date(2024, 1, 1))]
    json.dumps(to_json(shipped))  # JSON-ready as it is
