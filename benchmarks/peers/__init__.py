"""Peer methods measured beside ContinuousSR by benchmarks/compare_peers.py (not part of the installed package)."""
