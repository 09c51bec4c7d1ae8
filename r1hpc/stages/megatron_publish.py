"""Publishing a model the Megatron ranks hold as the next version of a stage (an HF DeepseekV3
directory the rollout engines, evals and later stages load), shared by the GRPO train job
(r1hpc.stages.grpo_megatron) and the SFT ranks (r1hpc.stages.sft_megatron).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

__all__ = ["publish_megatron_model", "hf_pad_id"]

_WEIGHT_FILES = (".safetensors", ".bin", ".pt")
_NOT_COPIED = {"config.json", "model.safetensors.index.json", "generation_config.json"}


def _token_id(hf_dir: Path, key: str, default: int) -> int:
    value = json.loads((hf_dir / "config.json").read_text()).get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    return int(value) if value is not None else default


def hf_pad_id(hf_dir: Path) -> int:
    """The padding token id of an HF model directory (its eos when it names none)."""
    cfg = json.loads((hf_dir / "config.json").read_text())
    pad = cfg.get("pad_token_id")
    return int(pad if pad is not None else (cfg.get("eos_token_id") or 0))


def publish_megatron_model(
    ctx: Any, stage: str, version: int, model: Any, mcfg: Any, src: Path, meta: dict[str, Any]
) -> None:
    """Collective (every rank calls it): export `model` (Megatron, config `mcfg`) as HF weights,
    with the tokenizer and generation files of `src` (the HF version it was trained from), and
    publish them as models/<stage>/v<version> (rank 0). Returns once the version is in place for
    every rank."""
    import torch.distributed as dist

    from r1hpc.megatron.hf_convert import export_hf
    from r1hpc.store import publish_model

    is_main = dist.get_rank() == 0
    tmp = [str(ctx.tmp_dir()) if is_main else ""]
    dist.broadcast_object_list(tmp, src=0)
    out = Path(tmp[0])
    try:
        export_hf(
            model,
            mcfg,
            out,
            bos_id=_token_id(src, "bos_token_id", 0),
            eos_id=_token_id(src, "eos_token_id", 1),
            pad_id=hf_pad_id(src),
        )
        if is_main:
            for f in src.iterdir():  # tokenizer and generation files: training does not change them
                if (
                    f.is_file()
                    and f.name not in _NOT_COPIED
                    and not f.name.endswith(_WEIGHT_FILES)
                    and not f.name.startswith("MANIFEST")
                ):
                    shutil.copy2(f, out / f.name)
            publish_model(ctx.run, stage, out, version=version, meta=meta)
    finally:
        if is_main:
            shutil.rmtree(out, ignore_errors=True)
    dist.barrier()
