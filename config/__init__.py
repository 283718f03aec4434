"""What every process is configured with, below the sinks and above the rules: the settings
(``settings.py``, and ``.stack/env`` in ``stackenv.py``), each Kafka client's configuration
from them (``kafka.py``), the one log format (``logs.py``), and the shipped jurisdiction
policies and game catalogue, loaded and checked (``policies.py``, ``games.py``, found by
``shipped.py``). Every layer above imports these; nothing here imports them
(``tests/unit/test_layers.py``)."""
