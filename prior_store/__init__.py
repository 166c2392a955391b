"""The Zarr v3 store of fitted Gaussian fields (the Deep Gaussian Prior's raw data). Imports zarr and numpy only."""
