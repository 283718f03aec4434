"""What every process is configured with, below the flows and above the rules: the settings
(``settings.py``), each Kafka client's configuration from them (``kafka.py``), and the
shipped jurisdiction policies and game catalogue, loaded and checked (``policies.py``,
``games.py``, found by ``shipped.py``). The front door, the topologies and the flows import
these; nothing here imports them (``tests/unit/test_layers.py``)."""
