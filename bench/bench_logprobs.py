"""Peak memory and time of chosen-token log-probs (forward + backward): naive vs chunked.

Run: `.venv/bin/python bench/bench_logprobs.py` (defaults T=4096, V=32768, H=512, fp32, B=1;
see --help). Three variants, each measured in its own fresh subprocess so that one variant's
allocations cannot hide another's peak:

  naive          logits = h @ W.T; log_softmax(logits).gather(label); backward to h and W
  chunked-logits logits = h @ W.T (full); r1hpc.algos.logprobs_from_logits (chunked softmax)
  chunked-hidden r1hpc.algos.logprobs_from_hidden: never forms the (T, V) logits

Peak memory: on CUDA, torch.cuda.max_memory_allocated above the inputs; on CPU, the growth of the
process's peak RSS (ru_maxrss) from after the inputs are built to after the first forward+backward.
Time: median over --reps further runs. The script also checks that the three variants agree.
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # standalone: no install needed

from r1hpc.algos import logprobs_from_hidden, logprobs_from_logits  # noqa: E402

VARIANTS = ("naive", "chunked-logits", "chunked-hidden")


def run_variant(name: str, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int):
    """One forward + backward; returns (logp (B, T), grad_hidden, grad_weight)."""
    h = hidden.detach().requires_grad_()
    w = weight.detach().requires_grad_()
    if name == "naive":
        logits = h @ w.t()
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels[..., None]).squeeze(-1)
    elif name == "chunked-logits":
        logp = logprobs_from_logits(h @ w.t(), labels, chunk_size=chunk)
    else:
        logp = logprobs_from_hidden(h, w, labels, chunk_size=chunk)
    logp.sum().backward()
    return logp.detach(), h.grad, w.grad


def child(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    dev = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    hidden = (torch.randn(args.batch, args.tokens, args.hidden, device=dev) / args.hidden**0.5).to(dtype)
    weight = torch.randn(args.vocab, args.hidden, device=dev).to(dtype)
    labels = torch.randint(0, args.vocab, (args.batch, args.tokens), device=dev)
    cuda = dev.type == "cuda"
    # A tiny warm-up first, so one-time library set-up (BLAS buffers, thread pools) is not counted.
    run_variant(args.variant, hidden[:, :8], weight, labels[:, :8], args.chunk)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = run_variant(args.variant, hidden, weight, labels, args.chunk)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    if args.save:
        torch.save(out, args.save)
    del out
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        run_variant(args.variant, hidden, weight, labels, args.chunk)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"variant": args.variant, "peak_bytes": peak, "time_s": statistics.median(times)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=4096, help="T, tokens per sequence")
    p.add_argument("--vocab", type=int, default=32768, help="V")
    p.add_argument("--hidden", type=int, default=512, help="H")
    p.add_argument("--batch", type=int, default=1, help="B")
    p.add_argument("--chunk", type=int, default=1024, help="tokens per chunk")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--reps", type=int, default=3, help="timed runs per variant (after the measured one)")
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # child mode
    p.add_argument("--save", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        child(args)
        return

    print("$ " + shlex.join([".venv/bin/python", "bench/bench_logprobs.py", *sys.argv[1:]]))
    b, t, v, h = args.batch, args.tokens, args.vocab, args.hidden
    print(
        f"shape B={b} T={t} V={v} H={h} dtype={args.dtype} chunk={args.chunk} device={args.device} "
        f"threads={torch.get_num_threads()} torch={torch.__version__}"
    )
    print(f"one (B*T, V) fp32 tensor = {b * t * v * 4 / 2**20:.0f} MiB")
    results, outs = {}, {}
    tmp = Path(tempfile.mkdtemp(prefix="bench_logprobs_"))
    for name in VARIANTS:
        save = tmp / f"logprobs_{name}.pt"
        cmd = [sys.executable, __file__, *sys.argv[1:], "--variant", name, "--save", str(save)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"variant {name} failed:\n{proc.stderr}")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        outs[name] = torch.load(save)
        save.unlink()
    tmp.rmdir()

    print(f"{'variant':<16}{'peak extra MiB':>16}{'time s (median)':>18}{'mem vs naive':>14}{'time vs naive':>15}")
    nv = results["naive"]
    for name in VARIANTS:
        r = results[name]
        print(
            f"{name:<16}{r['peak_bytes'] / 2**20:>16.0f}{r['time_s']:>18.3f}"
            f"{nv['peak_bytes'] / max(r['peak_bytes'], 1):>13.1f}x{r['time_s'] / nv['time_s']:>14.2f}x"
        )
    ref = outs["naive"]
    for name in VARIANTS[1:]:
        diffs = [float((a.float() - r.float()).abs().max()) for a, r in zip(outs[name], ref)]
        print(
            f"max |diff| vs naive, {name}: logp {diffs[0]:.2e}  grad_hidden {diffs[1]:.2e}  grad_weight {diffs[2]:.2e}"
        )
    print("(mem vs naive = naive peak / this peak; time vs naive = this time / naive time)")


if __name__ == "__main__":
    main()
