"""Read the jurisdiction policy files (``policies/*.toml``) into ``rules.policy.Policies``."""

from __future__ import annotations

from pathlib import Path

from config.shipped import shipped
from rules.policy import Policies, PolicyError, parse_policy

# The policies shipped with Croupier (the source tree's, or a wheel's data files);
# CROUPIER_POLICY_DIR names another directory.
DEFAULT_POLICY_DIR = shipped("policies")
POLICY_DIR_VARIABLE = "CROUPIER_POLICY_DIR"


def load_policies(directory: Path) -> Policies:
    """Every ``*.toml`` policy in ``directory``; each file is named for its jurisdiction."""
    if not directory.is_dir():
        msg = (
            f"{directory}: no such policy directory; check the path, or point "
            f"{POLICY_DIR_VARIABLE} at the directory that holds the policy files (UK.toml, ...)"
        )
        raise PolicyError(msg, source=str(directory))
    files = sorted(directory.glob("*.toml"))
    if not files:
        msg = (
            f"{directory}: no policy files (*.toml) in the directory; add one file per "
            f"jurisdiction, e.g. UK.toml, or point {POLICY_DIR_VARIABLE} at the right directory"
        )
        raise PolicyError(msg, source=str(directory))
    policies = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            msg = f"{path.name}: cannot read the policy file ({exc})"
            raise PolicyError(msg, source=path.name) from exc
        policy = parse_policy(text, source=path.name)
        if path.stem != policy.jurisdiction:
            msg = (
                f"{path.name}: jurisdiction is {policy.jurisdiction!r} but the file is named "
                f"{path.name!r}; rename the file to {policy.jurisdiction}.toml or fix the "
                "jurisdiction key"
            )
            raise PolicyError(msg, source=path.name)
        policies.append(policy)
    return Policies(policies)
