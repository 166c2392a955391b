"""The ContinuousSR model: encoders, heads, data, training, inference, metrics, checkpoint import."""
