"""``croupier dice`` and ``croupier rng``: the house's own game and its certified generator."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import click

from croupier import arguments
from croupier.commands import helptext, output, params
from croupier.commands.output import emit_json, progress

if TYPE_CHECKING:
    from rich.console import Console

    from croupier.dice import Played
from croupier.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE


@click.group(
    help="Croupier Dice, the house's own game, through the casino wallet\n\n"
    + helptext.verbatim(helptext.DICE)
)
def dice() -> None:
    """Croupier Dice."""


@dice.command("play", help="play rounds for a player; exit 1 unless all complete")
@click.option("--player", required=True, type=params.BUSINESS_ID)
@click.option(
    "--stake",
    type=params.DECIMAL,
    default=Decimal("1.00"),
    show_default=True,
    help="a positive amount in the currency's minor units",
)
@click.option("--currency", default="EUR", type=params.CURRENCY, show_default=True)
@click.option("--pick", type=int, help="the face to bet on (default: a random one)")
@click.option("--rounds", type=params.ROUNDS, default=1, show_default=True)
@click.option(
    "--timeout",
    type=params.SECONDS,
    default=60.0,
    help="seconds to wait for each answer (default 60)",
)
@click.option("--manifest", type=click.Path(path_type=Path), hidden=True)  # tests: a tampered one
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
def play(
    player: str,
    stake: Decimal,
    currency: str,
    pick: int | None,
    rounds: int,
    timeout: float,
    manifest: Path | None,
    as_json: bool,
) -> int:
    from config.stackenv import stack_settings
    from croupier.dice import Bet, DiceRefused, DiceTable
    from rules import dice as rules
    from rules.games import CatalogueError

    if pick is not None and not 1 <= pick <= rules.FACES:
        print(f"croupier dice: --pick is a face, 1 to {rules.FACES}", file=sys.stderr)
        return EXIT_USAGE
    try:
        arguments.stake(stake, currency)
    except arguments.InputError as exc:
        print(f"croupier dice: --stake: {exc}", file=sys.stderr)
        return EXIT_USAGE
    settings = stack_settings()
    try:
        table = DiceTable(settings, manifest_path=manifest)
    except (DiceRefused, CatalogueError) as exc:
        print(f"croupier dice: the table refuses to open: {exc}", file=sys.stderr)
        return EXIT_USAGE
    bets = [
        Bet(player, stake, pick or table.rng.between(1, rules.FACES), currency)
        for _ in range(rounds)
    ]
    played = table.play(bets, timeout=timeout)
    if as_json:
        emit_json({"rng_build": table.build, "rounds": [p.to_json() for p in played]}, indent=2)
    else:
        print_rounds(table.build, played)
    silent = sum(
        1
        for p in played
        if p.debit["status"] == "unanswered" or (p.roll is not None and p.credit is None)
    )
    if silent:
        print(
            f"croupier dice: {silent} round(s) got no answer within --timeout {timeout:g} s "
            "(is a worker running? `croupier stack status`)",
            file=sys.stderr,
        )
    return EXIT_OK if all(p.completed for p in played) else EXIT_FAILED


@click.group(
    help="the certified random number generator: verify its build, run the battery"
    "\n\n" + helptext.verbatim(helptext.RNG)
)
def rng() -> None:
    """The certified generator."""


def _certified() -> tuple[object, str] | None:
    from rng.certify import RngNotCertified, load_manifest, verify

    manifest = load_manifest()
    try:
        return manifest, verify(manifest)
    except RngNotCertified as exc:
        print(f"croupier rng: {exc}", file=sys.stderr)
        return None


@rng.command("verify", help="is rng/generator.py the certified build? (exit 0/1)")
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
def rng_verify(as_json: bool) -> int:
    from rng.certify import Manifest

    certified = _certified()
    if certified is None:
        return EXIT_FAILED
    manifest, build = certified
    assert isinstance(manifest, Manifest)
    if as_json:
        emit_json(
            {
                "module": manifest.module,
                "build": build,
                "certificate": manifest.certificate,
                "lab": manifest.lab,
                "standard": manifest.standard,
                "certified": manifest.certified.isoformat(),
            }
        )
        return EXIT_OK
    print(f"{manifest.module} is the certified build {build}")
    print(
        f"certificate {manifest.certificate}, {manifest.lab}, {manifest.standard}, "
        f"{manifest.certified.isoformat()}"
    )
    return EXIT_OK


@rng.command("test", help="the statistical battery; exit 1 if a test fails")
@click.option(
    "--samples", type=params.SAMPLES, help="outputs per stream, 10000 to 100000000 (default 200000)"
)
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
def rng_test(samples: int | None, as_json: bool) -> int:
    from rng.battery import DEFAULT_SAMPLES, run_battery

    if _certified() is None:
        return EXIT_FAILED
    with progress("statistical battery") as on_progress:
        report = run_battery(samples=samples or DEFAULT_SAMPLES, on_progress=on_progress)
    if as_json:
        emit_json(report.to_json(), indent=2)
    else:
        print(report.render())
    return EXIT_OK if report.passed else EXIT_FAILED


def print_rounds(build: str, played: Sequence[Played], console: Console | None = None) -> None:
    """The rounds as a table, one row each: the pick, the roll, the win and the wallet's
    answer (coloured on a terminal; plain columns when piped)."""
    from rules import dice as rules

    print(f"Croupier Dice, RNG build {build[:16]}…, pays {rules.PAYOUT}x on the pick")
    rows = []
    for p in played:
        if p.roll is None:
            answer = f"debit {p.debit['status']} ({p.debit.get('error')})"
            rows.append([p.round_id, str(p.bet.pick), "-", "-", answer, "-"])
            continue
        credit = p.credit["status"] if p.credit else "unanswered"
        balance = str(p.credit["balance"]) if p.credit else "?"
        row = [p.round_id, str(p.bet.pick), str(p.roll), str(p.win), f"credit {credit}", balance]
        rows.append(row)
    headers = ["round", "pick", "roll", "win", "answer", "balance"]
    output.table(headers, rows, right=(1, 2, 3, 5), verdicts=4, console=console)
