"""Faust agents, one module per flow: decode, call rules, call a sink, emit."""
