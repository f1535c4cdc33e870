"""edgekd: distil a large classifier into a small student that provably runs on one edge target."""

__version__ = "0.1.0"
