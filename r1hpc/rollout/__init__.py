"""Rollout generation: the ``Generator`` interface and ``Sample`` records (``base.py``), the HF
generate backend (``hf.py``) and the vLLM backend (``vllm_engine.py``); ``make_generator``
(``factory.py``) picks."""

from r1hpc.rollout.base import Generator, Sample
from r1hpc.rollout.factory import make_generator, vllm_available

__all__ = ["Generator", "Sample", "make_generator", "vllm_available"]
