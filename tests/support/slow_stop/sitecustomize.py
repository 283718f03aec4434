"""Loaded by a worker started with this directory on PYTHONPATH, to hold open a window that
a loaded machine opens now and then by chance: the app's timers still running after its
producer has closed (Faust stops timers last).

- ``CROUPIER_TEST_SLOW_AUDIT_SEND``: each send to the ``audit`` topic takes this many
  seconds longer, so a relay pass over a backlog lasts seconds and a stop lands inside it.
- ``CROUPIER_TEST_SLOW_LAST_STOP``: Faust's monitor, the app's last service to stop, after
  the producer, takes this many seconds to stop, so the timers outlive the producer.
"""

import os
from typing import Any

if os.environ.get("CROUPIER_TEST_SLOW_AUDIT_SEND"):
    import asyncio

    from faust.transport.drivers.aiokafka import Producer

    _send = Producer.send
    _delay = float(os.environ["CROUPIER_TEST_SLOW_AUDIT_SEND"])

    async def _slow_send(self: Producer, topic: str, *args: Any, **kwargs: Any) -> Any:
        if topic.rsplit(".", 1)[-1] == "audit":  # `<prefix>.audit`
            await asyncio.sleep(_delay)
        return await _send(self, topic, *args, **kwargs)

    Producer.send = _slow_send  # type: ignore[method-assign]

if os.environ.get("CROUPIER_TEST_SLOW_LAST_STOP"):
    import asyncio

    from faust.sensors.monitor import Monitor

    _stop = Monitor.on_stop
    _last = float(os.environ["CROUPIER_TEST_SLOW_LAST_STOP"])

    async def _slow_stop(self: Monitor) -> None:
        await asyncio.sleep(_last)
        await _stop(self)

    Monitor.on_stop = _slow_stop  # type: ignore[method-assign, assignment]
