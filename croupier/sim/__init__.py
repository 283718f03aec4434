"""``croupier simulate``: a reproducible football match day on the running stack.

``plan`` turns a seed and the options into every message of the day (pure, no I/O);
``run`` sends them on the wall clock, follows the decisions and sums the day up.
"""
