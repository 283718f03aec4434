"""ClickHouse adapters: one client contract, and the chdb engine served over the HTTP interface.

``sinks.clickhouse.client.connect(url)`` reaches ClickHouse the same way whether a ClickHouse
server or ``sinks.clickhouse.server`` (chdb in one owning process) answers at ``url``.
"""
