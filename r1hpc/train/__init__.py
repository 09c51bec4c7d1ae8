"""Training for small models with plain torch (transformers): batches, log-probs, GRPO and SFT updates."""
