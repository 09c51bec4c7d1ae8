"""Check the HF <-> Megatron conversion at a parallel layout by comparing log-probs with transformers.

    torchrun --nproc-per-node 2 -m r1hpc.megatron.hf_check --tp 2 --work /tmp/hfcheck

1. rank 0 builds a random DeepseekV3ForCausalLM (every weight perturbed, norms and the router's
   expert bias included, so a swapped or missing tensor shows) and saves it: ``<work>/hf_in``;
2. every rank imports it (``import_hf``) and the Megatron log-probs of fixed tokens are compared
   with transformers' on the same tokens;
3. ``export_hf`` writes ``<work>/hf_out``; its tensors are compared with hf_in's (exact) and
   transformers' log-probs of the exported model with the original's;
4. the export is imported into a fresh model (other seed): same log-probs as in 2.

Prints one line ``HFCHECK {json}`` (rank 0) with the largest absolute differences. Any layout
used for training should pass this (the notes' lesson: the bridge was silently wrong at TP>1/EP>1).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist

from r1hpc.megatron.model import MegatronModelConfig, ParallelLayout, build_model


def random_hf_model(cfg: MegatronModelConfig, seed: int) -> torch.nn.Module:
    """A DeepseekV3ForCausalLM of these sizes with every tensor randomised (norms around 1)."""
    from transformers import DeepseekV3ForCausalLM

    from r1hpc.megatron.hf_convert import hf_config

    gen = torch.Generator().manual_seed(seed)
    model = DeepseekV3ForCausalLM(hf_config(cfg))
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if "norm" in name:
                t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=gen))
            elif "e_score_correction_bias" in name:
                t.copy_(0.05 * torch.randn(t.shape, generator=gen))
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
    return model.eval()


def hf_logprobs(model: torch.nn.Module, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B, S-1) log-probs of tokens[:, 1:] under an HF causal LM, logits divided by temperature."""
    with torch.no_grad():
        logits = model(input_ids=tokens[:, :-1]).logits.float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:, None]).squeeze(-1)


def megatron_logprobs(model: torch.nn.Module, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor | None:
    """(B, S-1) log-probs on every rank that holds them (whole batch on every DP rank), gathered to all ranks."""
    from r1hpc.megatron.grpo_step import compute_logprobs, is_reporting_rank

    mbs = [{"input_ids": tokens[:, :-1].contiguous(), "labels": tokens[:, 1:].contiguous()}]
    out = compute_logprobs(model, mbs, temperature=temperature)
    mine = out[0] if out and is_reporting_rank() else None
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return next(x for x in everyone if x is not None)


def main(argv: list[str] | None = None) -> None:
    from transformers import DeepseekV3ForCausalLM

    from r1hpc.megatron.hf_convert import export_hf, import_hf
    from r1hpc.megatron.parallel import destroy_parallel, init_parallel

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--pp", type=int, default=1)
    p.add_argument("--ep", type=int, default=1)
    p.add_argument("--work", required=True, help="empty directory for hf_in / hf_out")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--max-file-bytes", type=int, default=2 << 30, help="small values exercise multi-file export")
    args = p.parse_args(argv)

    layout = ParallelLayout(tp=args.tp, pp=args.pp, ep=args.ep)
    cfg = MegatronModelConfig()
    init_parallel(layout, seed=args.seed)
    work = Path(args.work)
    rank = dist.get_rank()
    gen = torch.Generator().manual_seed(args.seed)
    seq = 16 * max(1, args.tp) + 1  # input length a multiple of TP (sequence parallel)
    tokens = torch.randint(0, cfg.vocab_size, (4, seq), generator=gen)
    hf_in, hf_out = work / "hf_in", work / "hf_out"
    ref = None
    if rank == 0:
        original = random_hf_model(cfg, args.seed)
        original.save_pretrained(str(hf_in))
        ref = hf_logprobs(original, tokens, args.temperature)
    dist.barrier()

    model = build_model(cfg, layout)
    import_hf(hf_in, model)
    lp_import = megatron_logprobs(model, tokens, args.temperature)
    export_hf(model, cfg, hf_out, max_file_bytes=args.max_file_bytes)

    fresh = build_model(cfg, layout)  # initialised by the RNG state after the first: different weights
    lp_fresh = megatron_logprobs(fresh, tokens, args.temperature)
    import_hf(hf_out, fresh)
    lp_roundtrip = megatron_logprobs(fresh, tokens, args.temperature)

    if rank == 0:
        from safetensors.torch import load_file

        exported = DeepseekV3ForCausalLM.from_pretrained(str(hf_out), dtype=torch.float32).eval()
        a = load_file(str(hf_in / "model.safetensors"))
        b = {}
        for f in hf_out.glob("*.safetensors"):
            b.update(load_file(str(f)))
        rec = {
            "layout": {"tp": args.tp, "pp": args.pp, "ep": args.ep},
            "temperature": args.temperature,
            "import_vs_hf": float((lp_import - ref).abs().max()),
            "exported_hf_vs_hf": float((hf_logprobs(exported, tokens, args.temperature) - ref).abs().max()),
            "roundtrip_vs_import": float((lp_roundtrip - lp_import).abs().max()),
            "fresh_vs_import": float((lp_fresh - lp_import).abs().max()),  # must be large: a real change
            "same_tensor_names": sorted(a) == sorted(b),
            "tensors_identical": sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a),
            "files": sorted(f.name for f in hf_out.iterdir()),
        }
        print("HFCHECK " + json.dumps(rec), flush=True)
    destroy_parallel()


if __name__ == "__main__":
    main()
