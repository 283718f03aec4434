"""The flows, one module each, run by one commit protocol (``flow.py``)."""
