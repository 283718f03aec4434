"""Regulator report writers: files in the formats regulators take (``safe``, ``sci``)."""


class ReportError(ValueError):
    """A record or a report directory a writer refuses; the message says which and why."""
