"""Peer methods measured beside ContinuousSR by benchmarks/peers.py (not part of the installed package)."""
