"""Model files: training checkpoints, safetensors exports, official ContinuousSR imports, and the one loader
(`model_files`) that tells them apart."""
