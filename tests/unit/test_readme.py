"""The README's commands exist: every `croupier ...` line parses, every make target is real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from croupier.cli import parse

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
LINES = [line.split("#")[0].strip() for block in BLOCKS for line in block.splitlines()]


def expand(line: str) -> list[list[str]]:
    """`croupier stack up|down|status [--json]` stands for each choice, with and without flags."""
    words = re.sub(r"\[[^\]]*\]", " ", line).split()[1:]
    variants: list[list[str]] = [[]]
    for word in words:
        variants = [[*v, choice] for v in variants for choice in word.split("|")]
    return variants


def test_the_readme_opens_with_the_two_commands() -> None:
    first = BLOCKS[0]
    assert first.splitlines()[0].startswith("make demo")
    assert first.splitlines()[1].startswith("make test")


@pytest.mark.parametrize("line", [ln for ln in LINES if ln.startswith("croupier ")])
def test_croupier_commands_in_the_readme_parse(line: str) -> None:
    for argv in expand(line):
        parse(argv)  # exits (SystemExit) on an unknown command or option


def test_make_targets_in_the_readme_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.M))
    used = {ln.split()[1] for ln in LINES if ln.startswith("make ")}
    assert used and used <= targets
