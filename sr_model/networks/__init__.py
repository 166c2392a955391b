"""The networks: model configs and presets, the encoder table and encoders, the three heads, the covariance
dictionary the model mixes from, and `ContinuousSR` that puts them together. Imports nothing else of sr_model."""
