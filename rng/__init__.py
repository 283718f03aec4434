"""The certified RNG for casino games: the generator a lab certifies, its certificate, and
the statistical battery the lab runs on it.

``rng.generator`` is the certified code and imports nothing from the rest of Croupier;
games obtain it through ``rng.certify.certified_rng()``, which refuses to hand out a
generator whose code is not the certified build.
"""
