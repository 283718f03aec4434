"""The long help of the commands that need more than a line (shown by ``-h``)."""

REPLAY_SETTLEMENT = """\
Recompute one bet's settlement from the recorded events only: the bet as received
(bets.request), each leg's accepted price (bet_legs.odds) and every settlement-kind
message of its events (market_messages), replayed in the order they were processed with
the feed's rules (rules/replay.py) and priced by rules/sportsbook.settle_bet. Shown
beside the book (bets, settlements) and the ledger (bet:<id> and every
settlement:<id>/<n>, payouts read from the entries). Exit 0 when replay, book and ledger
agree (settlement in force, legs, price, stake and the whole settlement history), 1 when
they do not, 2 when no bet has that id.
"""

REPLAY = """\
croupier replay settlement BET_ID [--json]
    one bet recomputed beside the book and the ledger (see `replay settlement -h`).

croupier replay [--from T1] [--to T2] [--json] [--keep]
    every player with a bet decided (bets.decided_at) in [T1, T2) is re-run, with their
    whole history, into a fresh scratch PostgreSQL schema, and the result is compared
    with the live tables. Exit 0 when nothing differs, 1 on any difference.

    Re-run through the real code: each bet's placement (SportsbookSink.place: market
    fence, stake through the ledger, the ledger's refusals, the stored decision and
    legs) and every recorded settlement-kind message of the bets' events
    (SportsbookSink.apply_market_message: market state, leg results, settlement math,
    rollbacks, resettlements, ledger postings).
    Taken as recorded: the odds table's and compliance's verdicts (accepted bets at
    their recorded leg prices; bets refused before the ledger keep their reason; bets
    the ledger refused are placed again for the ledger to decide); the players' other
    ledger operations (deposits, withdrawals, casino), re-posted as the same requests;
    the times (decided_at, settled_at) and the live order (each step at the first
    ledger transaction it posted; a step that posted nothing, by its start time).
    Compared: bets (status, reason, odds, decision JSON, settlement, payout), legs,
    settlements (kind, result, payout, JSON), every ledger transaction of the players
    (status, amounts, balances after) and their balances; the scratch ledger must
    reconcile. The scratch schema is dropped unless --keep.
"""

POLICIES = """\
The jurisdiction policies: one TOML file per jurisdiction (UK.toml holds
jurisdiction = "UK"), read from DIR, else from $CROUPIER_POLICY_DIR, else from the
policies/ shipped with Croupier (the source tree's, or an install's share/croupier/).

croupier policies list [--json] [--dir DIR]
    a table of the policies (--json: the full policies as a JSON list).
croupier policies check [DIR]
    validate every file; exit 0 and print "N policies ok", or exit 2 and print what to
    fix in which file.
"""

GAMES = """\
The casino game registry: every game Croupier's wallet takes debits for, with its
provider and its certifications (test lab, certificate id, jurisdictions, RTP, the
SHA-256 of the certified build, issue and expiry dates). Read from FILE, else from
$CROUPIER_GAMES_CATALOGUE, else from games/catalogue.toml shipped with Croupier. A
debit for a game missing here is refused unknown_game; for a game with no certification
valid today for the player's jurisdiction, game_not_certified.

croupier games list [--json] [--jurisdiction J] [--file FILE]
    a table of the games (--json: the whole registry as a JSON list).
croupier games check [FILE]
    validate the catalogue; exit 0 and print "N games ok", or exit 2 and say what to fix.
"""

DICE = """\
Croupier Dice: pick a face of one fair die; the pick pays 5.82x the stake (RTP 97.00%).
Each round is a debit through the casino wallet, a roll by the certified generator
(rng/generator.py) once the stake is taken, and a credit (zero on a loss) that closes
the round; both calls carry the generator's build hash, stored for audit. The table
refuses to open (exit 2) unless the generator is the build rng/manifest.json certifies
and a certification of croupier-dice in the game registry names that build.

croupier dice play --player P [--stake 1.00] [--pick N] [--rounds N] [--timeout S] [--json]
    exit 0 when every round completed, 1 when a debit was refused (the reason is shown)
    or an answer did not come within --timeout seconds (default 60; a debit with no
    answer is rolled back), 2 on an argument the table cannot take (a stake must be
    above 0 and in the currency's minor units) or when the table refuses to open.
"""

RNG = """\
The generator Croupier's own games draw with (rng/generator.py): the operating system's
CSPRNG, scaled without bias by rejection sampling, shuffled by Fisher-Yates.

croupier rng verify
    exit 0 when the module's SHA-256 is the build rng/manifest.json certifies, else 1.
croupier rng test [--samples N] [--json]
    the statistical battery a test lab runs, at 99% confidence, on the raw and the
    scaled output (chi-square frequency, runs, serial correlation, gap, poker, coupon
    collector; see rng/battery.py for the method and the retest rule). Prints the
    report; exit 0 when every test passes, 1 when one fails, both only on a certified
    build.
"""


def verbatim(text: str) -> str:
    """``text`` as click shows it unwrapped: each paragraph marked ``\\b``."""
    return "\n\n".join("\b\n" + para for para in text.strip("\n").split("\n\n"))
