"""Stage 1 (crop plan, batched per-crop fitting, the Dask job) and stage 2 (statistics, dictionary, plots)."""
