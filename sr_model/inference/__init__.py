"""Inference: the encode (pieces, tiles under a memory budget) and band-by-band output of large images to files."""
