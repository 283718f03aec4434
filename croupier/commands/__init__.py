"""The ``croupier`` command line on click: one module a job, the root group here.

| module | commands |
| --- | --- |
| ``stack`` | ``stack up|down|status``, ``topics``, ``db``, ``worker``, ``analytics`` |
| ``wallet`` | ``wallet balance|statement|reconcile`` |
| ``replay`` | ``replay settlement BET_ID``, ``replay --from --to`` |
| ``audit`` | ``audit verify|checkpoint|keygen|run|rebuild|export`` |
| ``catalogue`` | ``policies list|check``, ``games list|check`` |
| ``casino`` | ``dice play``, ``rng verify|test`` |
| ``regulator`` | ``regulator follow``, ``reports write|verify`` |
| ``ops`` | ``sql``, ``check``, ``status``, ``simulate``, ``dashboard``, ``demo`` |
| ``completion`` | ``completion bash|zsh|fish`` |
| ``croupier/gateway/command.py`` | ``gateway run|key add|token issue|openapi`` |

``params`` checks what a user types (``croupier/arguments.py``), ``output`` prints (JSON,
tables, progress bars), ``printers`` holds the longer text reports, ``helptext`` the long
help. A command module imports click and our light modules only; what a command needs
(faust, psycopg, chdb, the settings) it imports when it runs, so ``--help`` stays quick.
A command returns its exit status (``croupier/exits.py``).
"""

from __future__ import annotations

import click

from croupier.commands import audit, casino, catalogue, completion, ops, regulator, replay, stack
from croupier.commands import wallet as wallet_commands

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(
    context_settings=CONTEXT,
    help="The croupier command line. Exit status 0 means what was asked for holds; 1 a "
    "breach or a failed check; 2 a usage error or a bad setting; 3 a service it needs "
    "cannot be reached. Every command that prints data takes --json (one JSON document).",
)
@click.version_option(package_name="croupier", prog_name="croupier", message="%(prog)s %(version)s")
def croupier() -> None:
    """The root group."""


def _build() -> click.Group:
    from croupier.gateway.command import gateway

    for command in (
        stack.stack,
        stack.topics,
        stack.db,
        stack.worker,
        wallet_commands.wallet,
        replay.replay,
        audit.audit,
        gateway,
        catalogue.policies,
        catalogue.games,
        casino.dice,
        casino.rng,
        regulator.regulator,
        regulator.reports,
        stack.analytics,
        ops.sql,
        ops.simulate,
        ops.check,
        ops.status,
        ops.dashboard,
        ops.demo,
        completion.completion,
    ):
        croupier.add_command(command)
    return croupier


root = _build()
