"""``croupier completion bash|zsh|fish``: the shell's completion script, from click.

Install it once, e.g. (bash, zsh, fish):

    croupier completion bash > ~/.local/share/bash-completion/completions/croupier
    croupier completion zsh > "${fpath[1]}/_croupier"
    croupier completion fish > ~/.config/fish/completions/croupier.fish

The script calls ``croupier`` back with ``_CROUPIER_COMPLETE`` set: the completions always
match the installed commands.
"""

from __future__ import annotations

import click

from croupier.exits import EXIT_OK


@click.command(
    help="print the shell completion script for bash, zsh or fish (source it, or "
    "save it where the shell loads completions)"
)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> int:
    from click.shell_completion import get_completion_class

    found = get_completion_class(shell)
    assert found is not None  # click has all three
    root = ctx.find_root().command
    script = found(root, {}, "croupier", "_CROUPIER_COMPLETE").source()
    click.echo(script)
    return EXIT_OK
