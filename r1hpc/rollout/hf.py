"""Rollouts with HF transformers ``generate``: the fallback backend, and the reference for vLLM.

Prompts are expanded ``n`` times, cut into batches of ``batch_size`` sequences, left-padded
(decoder-only models continue from the last position) and sampled with temperature / top_p.
Per-token log-probs come from the processed scores ``generate`` returns (after the temperature
and top-p warpers), so they are under the sampling distribution described in ``base.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm import tqdm
from transformers import AutoModelForCausalLM, GenerationConfig

from r1hpc.rollout.base import (
    FinishReason,
    Sample,
    check_generate_args,
    check_model_dir,
    derive_seed,
    load_generation_tokenizer,
    prompt_ids,
    truncate_at_stop,
)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# config.json keys that say nothing about the weights' layout (written by whoever saved them)
_CONFIG_NOISE = ("transformers_version", "_name_or_path")


def _config_json(path: Path) -> dict | None:
    """A model directory's config.json without its provenance keys; None when it is unreadable."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return {k: v for k, v in config.items() if k not in _CONFIG_NOISE} if isinstance(config, dict) else None


class HFGenerator:
    """HF ``generate`` over a policy directory. Not thread-safe (uses the global torch RNG)."""

    backend = "hf"

    def __init__(
        self,
        model_dir: str | Path,
        seed: int = 0,
        dtype: str = "float32",
        batch_size: int = 64,
        device: str = "cpu",
        progress: bool = True,
        pad_token: str = "",
        eos_tokens: list[str] | tuple[str, ...] = (),
    ) -> None:
        """pad_token / eos_tokens: config model.pad_token / model.eos_tokens (see load_generation_tokenizer)."""
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.seed = seed
        self.dtype = _DTYPES[dtype]
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.progress = progress
        self.model_dir = check_model_dir(model_dir)
        self.tokenizer, self.eos_ids = load_generation_tokenizer(self.model_dir, pad_token, eos_tokens)
        self.model: torch.nn.Module | None = None
        self._config: dict | None = None  # config.json of the held model
        self.load_weights(self.model_dir)

    def load_weights(self, model_dir: str | Path) -> None:
        """Load a new policy: copied into the held model when it has the same config.json (a GRPO
        stage's next version), else built afresh with from_pretrained."""
        path = check_model_dir(model_dir)
        config = _config_json(path)
        if self.model is not None and config is not None and config == self._config and self._copy_weights(path):
            self.model_dir = path
            return
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=self.dtype)
        vocab = model.get_output_embeddings().weight.shape[0]
        for name, ids in (("eos id", self.eos_ids), ("pad_token_id", [self.tokenizer.pad_token_id])):
            if max(ids) >= vocab:
                raise ValueError(
                    f"{path}: tokenizer {name} {max(ids)} is outside the model's vocabulary of {vocab} (config.json)"
                )
        # A bare generation config: sampling defaults shipped with a model (top_k,
        # repetition_penalty, ...) must not change the distribution we sample from.
        model.generation_config = GenerationConfig(eos_token_id=self.eos_ids, pad_token_id=self.tokenizer.pad_token_id)
        self.model = model.to(self.device).eval()
        self.model_dir = path
        self._config = config

    def _copy_weights(self, path: Path) -> bool:
        """Copy the safetensors weights of `path` into the held model in place (no new module, no
        re-read of config or generation settings); False when the files do not cover exactly the
        held parameters (the caller then loads with from_pretrained)."""
        files = sorted(path.glob("*.safetensors"))  # one file, or every shard of an index
        if not files:
            return False
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(str(f)))
        held = self.model.state_dict(keep_vars=True)
        if not state.keys() <= held.keys():
            return False
        # Keys absent from the files must be tied to a loaded one (lm_head.weight = embed_tokens);
        # a tied pair stored twice is left to from_pretrained's rule of which copy wins.
        loaded = {id(held[k]) for k in state}
        if len(loaded) < len(state) or any(id(held[k]) not in loaded for k in held.keys() - state.keys()):
            return False
        if any(tuple(held[k].shape) != tuple(v.shape) for k, v in state.items()):
            return False
        with torch.no_grad():
            for k, v in state.items():
                held[k].copy_(v)  # casts to the generator's dtype as from_pretrained(dtype=...) does
        return True

    def close(self) -> None:
        self.model = None
        self._config = None

    @torch.inference_mode()
    def generate(
        self,
        prompts: list[str] | list[list[int]],
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        stop: list[str] | None = None,
    ) -> list[list[Sample]]:
        """See ``base.Generator.generate``. Determinism also assumes the same batch_size."""
        check_generate_args(prompts, n, max_new_tokens, temperature, top_p, seed, stop)
        if self.model is None:
            raise RuntimeError("HFGenerator.generate called after close()")
        greedy = temperature == 0.0
        gen_config = GenerationConfig(
            do_sample=not greedy,
            temperature=None if greedy else temperature,
            top_p=None if greedy else top_p,
            top_k=0,
            max_new_tokens=max_new_tokens,
            eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            stop_strings=stop or None,
            return_dict_in_generate=True,
            output_scores=True,
        )
        flat = [p for p in prompt_ids(self.tokenizer, prompts) for _ in range(n)]  # sample j of prompt i at i * n + j
        starts = range(0, len(flat), self.batch_size)
        samples: list[Sample] = []
        for b, s in enumerate(tqdm(starts, desc="hf generate", unit="batch", disable=not self.progress)):
            samples += self._generate_batch(flat[s : s + self.batch_size], gen_config, derive_seed(seed, b), stop)
        return [samples[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _generate_batch(
        self, batch: list[list[int]], gen_config: GenerationConfig, seed: int, stop: list[str] | None
    ) -> list[Sample]:
        # left-padded, attention mask from the lengths (pad may equal eos)
        enc = self.tokenizer.pad({"input_ids": batch}, padding=True, return_tensors="pt").to(self.device)
        # fork_rng: seed generate's global RNG without disturbing the caller's stream
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = self.model.generate(**enc, generation_config=gen_config, tokenizer=self.tokenizer)
        new = out.sequences[:, enc["input_ids"].shape[1] :]  # (B, T) sampled ids, then padding
        scores = torch.stack(out.scores, dim=1).float()  # (B, T, V) processed logits
        logprobs = torch.log_softmax(scores, dim=-1).gather(-1, new[..., None]).squeeze(-1)
        return [self._to_sample(new[i].tolist(), logprobs[i].tolist(), stop) for i in range(new.shape[0])]

    def _to_sample(self, ids: list[int], logprobs: list[float], stop: list[str] | None) -> Sample:
        """Cut one row of generate's output where that sequence finished (ids: (T,))."""
        end, reason = len(ids), "length"
        ends = [ids.index(e) for e in self.eos_ids if e in ids]
        if ends:
            end, reason = min(ends) + 1, "stop"
        if stop:
            # The first k whose decoded prefix holds a stop string is where generate stopped
            # (StopStringCriteria); "contains" is monotone in k, so bisect instead of k decodes.
            if truncate_at_stop(self._decode(ids[:end]), stop)[1]:
                lo, hi = 1, end
                while lo < hi:
                    mid = (lo + hi) // 2
                    if truncate_at_stop(self._decode(ids[:mid]), stop)[1]:
                        hi = mid
                    else:
                        lo = mid + 1
                end, reason = lo, "stop"
        ids, logprobs = ids[:end], logprobs[:end]
        text, _ = truncate_at_stop(self._decode(ids), stop)
        finish: FinishReason = "stop" if reason == "stop" else "length"
        return Sample(text=text, token_ids=ids, logprobs=logprobs, finish_reason=finish)

    def _decode(self, ids: list[int]) -> str:
        if ids and ids[-1] in self.eos_ids:
            ids = ids[:-1]
        # special tokens stay: the R1 tags (<think>, <answer>) may be special tokens
        return self.tokenizer.decode(ids, skip_special_tokens=False)
