"""Regulator report writers: files in the formats regulators take."""
