"""Pydantic v2 models of every message on the wire; imports nothing of ours."""
