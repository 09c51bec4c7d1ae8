"""Megatron-core trainer for the large MoE base: model, parallel layout, GRPO step, checkpoints.

Import order matters on CPU: ``parallel.init_parallel`` applies ``cpu_shims`` before any model is built.
"""
