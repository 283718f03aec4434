"""The Python example of docs/producers.md calls the producer kit as it is."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

from croupier import client

DOC = Path(__file__).resolve().parents[2] / "docs" / "producers.md"


def test_the_documented_calls_bind_to_the_real_signatures() -> None:
    (block,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    tree = ast.parse(block)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert imported <= set(client.__all__)
    checked = set()
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        func = call.func
        if isinstance(func, ast.Name) and func.id in client.__all__:
            target = getattr(client, func.id)
        elif (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Call)
            and isinstance(func.value.func, ast.Name)
        ):
            target = getattr(getattr(client, func.value.func.id), func.attr)
        elif isinstance(func, ast.Attribute) and func.attr == "publish":
            target = client.Publisher.publish
        else:
            continue
        signature = inspect.signature(target)
        args = [None] * len(call.args)
        if "self" in signature.parameters:
            args = [None, *args]
        signature.bind(*args, **{k.arg: None for k in call.keywords if k.arg})
        checked.add(target.__qualname__)
    assert checked >= {"Publisher", "Publisher.publish", "Decisions", "Decisions.of_payment"}
