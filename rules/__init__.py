"""Pure business rules: plain functions of their arguments, no I/O, no streams, no sinks."""
