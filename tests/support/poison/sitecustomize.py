"""Loaded by a worker started with this directory on PYTHONPATH: a bug that one message
reaches, in every flow at once.

- ``CROUPIER_TEST_POISON``: deciding any message whose bytes contain this marker raises,
  every time, wherever the flow takes the message's position to build what it decides
  (bets, casino, payments, players, and odds changes). The flows must set such a message
  aside as a ``processing_error`` dead letter and decide everything around it.
"""

import os
from typing import Any

if os.environ.get("CROUPIER_TEST_POISON"):
    import streams.context

    _marker = os.environ["CROUPIER_TEST_POISON"].encode()
    _position = streams.context.position

    def _poisoned_position(message: Any) -> Any:
        if _marker in message.value:
            msg = "a bug this message reaches (injected by tests/support/poison)"
            raise RuntimeError(msg)
        return _position(message)

    streams.context.position = _poisoned_position
