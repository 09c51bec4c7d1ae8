"""One GRPO step of r1hpc against one step of TRL's GRPOTrainer, interleaved in one process.

Run: `.venv/bin/python bench/bench_grpo_vs_trl.py` (defaults: 8 prompts x G=8, max_new_tokens 128,
micro-batch 16, one optimizer update per step, KL 0.001, T=1.0, lr 2e-5; configs/tiny.yaml's model
size and rollout backend, grpo.generator=hf; see --help). tiny.yaml's own GRPO step is 16 prompts in
2 rollout shards of 8, 80 new tokens and 2 optimizer updates; the bench keeps one update per step,
which is what one TRL step is. `--generator vllm` gives r1hpc's rollout task vLLM (the CPU build, its
engine core in this process, held and reloaded in place across steps) against TRL's HF generate.
Needs `trl` (not a project dependency: .venv/bin/pip install -c constraints.txt trl==1.16.0).

Both sides train the same freshly built tiny Qwen2 (saved once to a temp dir) on prompts from
`generate_problems(0, "train", ...)` rendered with the R1 template, fp32, the same torch threads.

r1hpc's step is the long-lived GRPO stage (grpo.jobs=stage, the default) run by its own classes
in one process, on a real run directory (config.yaml, data/problems_train.jsonl, models/, rollouts/):
the rollout side is `r1hpc.stages.grpo.RolloutWorker` (what `rollout_loop` holds for the stage:
the HF generator and the reward WorkerPool live across steps), the train side is
`r1hpc.stages.grpo_train.TorchBackend` (what `train_steps` holds: policy, reference and AdamW in
memory). Per step k: `worker.run_step(k)` reloads the newly published v(k) into the generator in
place (list_versions + MANIFEST size check + `load_weights`), generates, scores in the pool and
publishes the shard; the train side reads the shard, `backend.update` (grpo_update with
GRPOSettings.of(cfg.grpo)) and `backend.publish(k + 1)` (save_pretrained + sha256 MANIFEST).
Not measured: the wait/poll of the two jobs for each other's output (grpo.poll_max_s; the
metrics' time_handoff_s in a real run) and the trainer checkpoint every grpo.checkpoint_every steps.

TRL: GRPOTrainer(num_generations=G, per_device_train_batch_size=micro-batch, gradient
accumulation so one optimizer step covers prompts x G completions, generation once per step,
beta=0.001, loss_type "dapo" = token mean over the step like r1hpc's "token-mean", constant lr,
AdamW betas (0.9, 0.99), no gradient checkpointing (TRL's default is on; r1hpc has none), fp32,
no vLLM). Its reward functions wrap r1hpc's accuracy_math and format_reward. With the default
--trl-rewards inprocess they run inside the trainer process, as TRL users usually do: acceptable
in a benchmark only (math-verify/sympy evaluate what they parse; r1hpc never does this).
--trl-rewards pool sends them through r1hpc's WorkerPool (one pool for the whole run).
TRL decodes completions with skip_special_tokens=True, which drops the <think>/<answer> tags
(special tokens here), so the wrappers re-decode completion_ids with the tags kept, like r1hpc.
TRL generates with the model it trains, so it has no publish or reload.

Phases are timed with wrappers around the real functions (the wrapped code is unchanged); the
TRL step runs inside trainer.train() and each r1hpc step runs in TRL's on_step_end callback, so
the two alternate (ABAB...) and machine noise hits both. Reported: the median over the timed
steps after --warmup steps, per phase, and the ratio r1hpc / TRL. On a machine shared with other
work, measure with --threads 1: at 2 threads with another process on one of 2 cores, both sides'
steps took 5-10x longer (OpenMP threads wait for each other) and varied too much to compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # standalone: no install needed

# Heavy imports only in the main process. The scoring WorkerPool's forkserver workers re-import
# __main__ (as __mp_main__): importing torch/transformers there would cost every worker seconds
# and charge them to r1hpc's scoring, while a real rollout job's __main__ (submitit) is light.
if __name__ == "__main__":
    import torch

    import r1hpc.rewards.scorer as r1_scorer
    import r1hpc.train.grpo as r1_grpo
    from r1hpc import configio
    from r1hpc.config import Config, DataConfig, GRPOConfig, RewardsConfig, RLStageConfig
    from r1hpc.model.factory import ModelSize, build_model, n_params
    from r1hpc.model.pretrain_corpus import build_corpus
    from r1hpc.model.prompting import PromptFormat
    from r1hpc.model.tokenizer import load_tokenizer, train_tokenizer
    from r1hpc.rewards import REWARD_FUNCS
    from r1hpc.rewards.isolation import WorkerPool
    from r1hpc.rewards.scorer import score_batch
    from r1hpc.stages.common import StageContext, data_path
    from r1hpc.stages.grpo import RolloutWorker
    from r1hpc.stages.grpo_train import TorchBackend
    from r1hpc.store import list_versions, publish_model, read_step_shards

    render_prompt = PromptFormat().render  # R1's plain template, as make demo uses
    from r1hpc.tasks.dataset import generate_problems, write_jsonl

STAGE = "r1_zero"
UPDATE = ("log-probs, no grad (old/ref)", "forward+backward", "optimizer (clip+step)")
PHASES = ("generate", "score", *UPDATE, "publish (save + manifest)", "reload (into generator)", "other")
COMPUTE = ("generate", "score", *UPDATE)


class Phases:
    """Seconds per phase of one step; `timer(name)` adds a block's wall time to `name`."""

    def __init__(self) -> None:
        self.secs: dict[str, float] = defaultdict(float)
        self.info: dict[str, float] = {}
        self.calls: dict[str, int] = defaultdict(int)

    @contextmanager
    def timer(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.secs[name] += time.perf_counter() - t0
            self.calls[name] += 1


def timed(fn: Callable, ph: Callable[[], Phases], name: str) -> Callable:
    """fn, with its wall time added to phase `name` of the current step."""

    def wrapper(*a: Any, **kw: Any) -> Any:
        with ph().timer(name):
            return fn(*a, **kw)

    return wrapper


def build_assets(root: Path, size: ModelSize, seed: int) -> tuple[Path, int]:
    """The tiny policy v0000 (model + tokenizer) in root/v0000; returns (dir, parameters)."""
    tok = train_tokenizer(build_corpus(0, 2000), 1024)
    model = build_model(size, len(tok), tok.eos_token_id, tok.pad_token_id, seed=seed)
    out = root / "v0000"
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return out, n_params(model)


def make_run_dir(root: Path, v0: Path, g: GRPOConfig, st: RLStageConfig, problems: list, seed: int) -> Path:
    """A run directory as `r1hpc run` leaves it before a GRPO stage: config.yaml, the training
    problems, v0000 of the stage published."""
    cfg = dataclasses.replace(
        Config(),
        name="bench",
        runs_dir=str(root),
        seed=seed,
        grpo=g,
        r1_zero=st,
        rewards=RewardsConfig(timeout_s=5.0, memory_mb=1024),  # configs/tiny.yaml
    )
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(configio.to_yaml(cfg))
    ctx = StageContext(run_dir)  # reads it back (and validates it) as every job does
    write_jsonl(data_path(ctx, "problems_train"), problems)
    publish_model(ctx.run, STAGE, v0, version=0)
    return run_dir


class R1hpcStep:
    """r1hpc's long-lived GRPO stage, one step per call: the rollout task's RolloutWorker and the
    train job's TorchBackend, both held across steps (module docstring)."""

    def __init__(self, run_dir: Path, threads: int) -> None:
        self.threads = threads
        self.ph = Phases()
        t0 = time.perf_counter()
        ctx = StageContext(run_dir)
        self.ctx, self.g = ctx, ctx.cfg.grpo
        self.worker = RolloutWorker(ctx, STAGE, 0)
        self.worker.load_policy(0)  # the rollout task's first step builds the engine
        self.worker.pool()  # and starts the pool
        self.backend = TorchBackend(ctx, STAGE)
        self.versions = {v.version: v for v in list_versions(ctx.run, STAGE)}
        self.backend.restore(0, self.versions)  # the train job's start: v0000, fresh AdamW
        self.init_s = time.perf_counter() - t0
        # timing wrappers on the held objects (instance attributes; the classes are untouched)
        cur = lambda: self.ph  # noqa: E731
        self.worker.generator.generate = timed(self.worker.generator.generate, cur, "generate")
        self.worker.load_policy = timed(self.worker.load_policy, cur, "reload (into generator)")
        self.backend.publish = timed(self.backend.publish, cur, "publish (save + manifest)")

    def close(self) -> None:
        self.worker.close()
        self.backend.close()

    def step(self, k: int) -> Phases:
        ph = self.ph = Phases()
        torch.set_num_threads(self.threads)
        t0 = time.perf_counter()
        # --- the rollout task (rollout_loop): reload v(k) in place, generate, score, publish ---
        saved_score = r1_scorer.score_batch  # run_step imports it at call time: the wrapper is seen
        r1_scorer.score_batch = timed(saved_score, lambda: ph, "score")
        try:
            self.worker.run_step(k)
        finally:
            r1_scorer.score_batch = saved_score
        # --- the train job (train_steps): read the shard, update, publish v(k+1) ---
        records = read_step_shards(self.ctx.run, STAGE, k, self.g.rollout_shards)
        reference = self.versions[0] if self.g.kl_coef > 0 else None
        metrics = self._update(ph, k, records, reference)
        self.backend.publish(k + 1, {"metrics": {"step": k, **metrics}})
        ph.secs["total"] = time.perf_counter() - t0
        ph.secs["other"] += ph.secs["total"] - sum(v for n, v in ph.secs.items() if n != "total")
        ph.info = {
            "completion tokens": sum(len(r["response_ids"]) for r in records) / len(records),
            "reward mean": sum(r["reward"] for r in records) / len(records),
            "loss": metrics.get("loss", float("nan")),
        }
        return ph

    def _update(self, ph: Phases, k: int, records: list, reference: Any) -> dict:
        """backend.update with grpo_update's no-grad log-prob passes and clip + optimizer step timed."""
        optimizer = self.backend.optimizer
        saved = (r1_grpo.sequence_logprobs, torch.nn.utils.clip_grad_norm_)
        r1_grpo.sequence_logprobs = timed(saved[0], lambda: ph, "log-probs, no grad (old/ref)")
        torch.nn.utils.clip_grad_norm_ = timed(saved[1], lambda: ph, "optimizer (clip+step)")
        optimizer.step = timed(optimizer.step, lambda: ph, "optimizer (clip+step)")
        try:
            t0 = time.perf_counter()
            metrics = self.backend.update(k, records, reference, None)
            inner = ph.secs["log-probs, no grad (old/ref)"] + ph.secs["optimizer (clip+step)"]
            ph.secs["forward+backward"] += time.perf_counter() - t0 - inner
        finally:
            r1_grpo.sequence_logprobs, torch.nn.utils.clip_grad_norm_ = saved
            del optimizer.step
        return metrics


def trl_reward_funcs(tokenizer: Any, mode: str, pool: WorkerPool | None, lengths: list[float]) -> list[Callable]:
    """accuracy_math and format_reward as TRL reward functions (dataset column "answer")."""
    eos = tokenizer.eos_token_id

    def texts(completion_ids: list[list[int]]) -> list[str]:
        # r1hpc's HFGenerator._decode: tags kept, the final eos dropped
        return [
            tokenizer.decode(ids[:-1] if ids and ids[-1] == eos else ids, skip_special_tokens=False)
            for ids in completion_ids
        ]

    def make(name: str) -> Callable:
        def reward(prompts: list, completions: list, completion_ids: list, answer: list, **_: Any) -> list:
            if name == "accuracy_math":
                lengths.append(sum(len(c) for c in completion_ids) / len(completion_ids))
            done = texts(completion_ids)
            examples = [{"answer": a, "prompt_ends_with_think": True, "language": "en"} for a in answer]
            if mode == "pool":
                return score_batch(done, examples, {name: 1.0}, pool=pool, progress=False).values[name]
            return [REWARD_FUNCS[name](c, e) for c, e in zip(done, examples)]  # in-process: bench only

        reward.__name__ = name
        return reward

    return [make("accuracy_math"), make("format")]


def make_trl_trainer(
    args: argparse.Namespace,
    v0: Path,
    out: Path,
    problems: list,
    g: GRPOConfig,
    st: RLStageConfig,
    pool: WorkerPool | None,
    lengths: list[float],
) -> Any:
    from datasets import Dataset
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    per_step = args.prompts * g.group_size
    if per_step % g.micro_batch_size:
        raise ValueError(f"prompts x group ({per_step}) must be a multiple of --micro-batch ({g.micro_batch_size})")
    cfg = TRLConfig(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=args.seed,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
        max_steps=args.warmup + args.steps,
        per_device_train_batch_size=g.micro_batch_size,
        gradient_accumulation_steps=per_step // g.micro_batch_size,
        num_generations=g.group_size,
        max_completion_length=g.max_new_tokens,
        temperature=g.temperature,
        top_p=g.top_p,
        top_k=0,
        beta=g.kl_coef,
        epsilon=g.clip_low,
        epsilon_high=g.clip_high,
        num_iterations=g.mini_batches,
        loss_type="dapo",
        scale_rewards="group" if g.scale_adv_by_std else "none",
        max_grad_norm=g.max_grad_norm,
        learning_rate=st.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        adam_beta1=0.9,
        adam_beta2=0.99,
        weight_decay=0.0,
        gradient_checkpointing=False,
        reward_weights=[st.rewards["accuracy_math"], st.rewards["format"]],
        model_init_kwargs={"dtype": torch.float32},
    )
    data = Dataset.from_list([{"prompt": render_prompt(p["prompt"]), "answer": p["answer"]} for p in problems])
    tokenizer = load_tokenizer(v0)
    return GRPOTrainer(
        model=str(v0),
        reward_funcs=trl_reward_funcs(tokenizer, args.trl_rewards, pool, lengths),
        args=cfg,
        train_dataset=data,
        processing_class=tokenizer,
    )


def instrument_trl(trainer: Any, current: Callable[[], Phases]) -> None:
    """Wrap the trainer's phases (instance attributes: the class and TRL's code are untouched)."""
    gen_score = trainer._generate_and_score_completions
    logps = trainer._get_per_token_logps_and_entropies
    train_step = trainer.training_step
    prep = trainer._prepare_inputs
    trainer._generate = timed(trainer._generate, current, "generate")
    trainer._calculate_rewards = timed(trainer._calculate_rewards, current, "score")

    def logps_w(*a: Any, **kw: Any) -> Any:
        if torch.is_grad_enabled():  # the loss's forward: part of forward+backward
            return logps(*a, **kw)
        with current().timer("log-probs, no grad (old/ref)"):
            return logps(*a, **kw)

    def prep_w(*a: Any, **kw: Any) -> Any:
        with current().timer("_prepare_inputs"):
            return prep(*a, **kw)

    def train_step_w(*a: Any, **kw: Any) -> Any:
        with current().timer("_training_step"):
            out = train_step(*a, **kw)
        current().info["last_training_step_end"] = time.perf_counter()
        return out

    trainer._generate_and_score_completions = timed(gen_score, current, "_generate_and_score")
    trainer._get_per_token_logps_and_entropies = logps_w
    trainer._prepare_inputs = prep_w
    trainer.training_step = train_step_w


def finish_trl_phases(ph: Phases, start: float, end: float, opt_end: float, lengths: list[float]) -> Phases:
    """Turn the raw wrapper times of one TRL step into the common phases."""
    s = ph.secs
    s["forward+backward"] = s.pop("_training_step") - s["_prepare_inputs"]
    s["optimizer (clip+step)"] = opt_end - ph.info.pop("last_training_step_end")
    gs = s.pop("_generate_and_score")
    s.pop("_prepare_inputs")
    s["total"] = end - start
    s["other"] = s["total"] - sum(v for n, v in s.items() if n != "total")
    ph.info["completion tokens"] = lengths[-1] if lengths else float("nan")
    ph.info["generate+score+logprobs (TRL's own block)"] = gs
    return ph


def run(args: argparse.Namespace) -> tuple[list[Phases], list[Phases], dict[str, Any]]:
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars on every load: noise in the log
    torch.set_num_threads(args.threads)
    g = dataclasses.replace(
        GRPOConfig(),
        prompts_per_step=args.prompts,
        group_size=args.group,
        max_new_tokens=args.max_new_tokens,
        micro_batch_size=args.micro_batch,
        temperature=args.temperature,
        kl_coef=args.kl,
        generator=args.generator,
        rollout_shards=1,  # one rollout task generates the whole step, as TRL's one process does
        mini_batches=1,  # one optimizer update per step, as TRL's step (num_iterations=1)
        max_staleness=0,  # on-policy: TRL generates with the policy it then updates
    )
    st = RLStageConfig(lr=args.lr, steps=args.warmup + args.steps)
    n_steps = args.warmup + args.steps
    # as many training problems as a run has (data.train_problems): the rollout task reads them per step
    problems = generate_problems(0, "train", max(DataConfig().train_problems, args.prompts * n_steps * 2))
    size = ModelSize(
        layers=args.layers,
        hidden=args.hidden,
        heads=args.heads,
        kv_heads=args.kv_heads,
        intermediate=args.intermediate,
        max_positions=512,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        v0, params = build_assets(root / "model", size, args.seed)
        r1 = R1hpcStep(make_run_dir(root / "runs", v0, g, st, problems, args.seed), args.threads)
        pool = WorkerPool(None, item_timeout_s=5.0) if args.trl_rewards == "pool" else None
        lengths: list[float] = []
        t0 = time.perf_counter()
        trainer = make_trl_trainer(args, v0, root / "trl", problems, g, st, pool, lengths)
        trl_init = time.perf_counter() - t0
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
        trl_steps: list[Phases] = []
        r1_steps: list[Phases] = []
        state = {"ph": Phases(), "start": 0.0, "opt_end": 0.0}

        class Interleave(TrainerCallback):
            """Close the TRL step's timing window, then run one r1hpc step before TRL's next."""

            def on_train_begin(self, *_: Any, **__: Any) -> None:
                torch.set_num_threads(args.threads)
                state["start"] = time.perf_counter()

            def on_optimizer_step(self, *_: Any, **__: Any) -> None:
                state["opt_end"] = time.perf_counter()

            def on_step_end(self, *_: Any, **__: Any) -> None:
                end = time.perf_counter()
                trl_steps.append(finish_trl_phases(state["ph"], state["start"], end, state["opt_end"], lengths))
                k = len(r1_steps)
                r1_steps.append(r1.step(k))
                print(
                    f"step {k}: TRL {trl_steps[-1].secs['total']:.2f} s, r1hpc {r1_steps[-1].secs['total']:.2f} s",
                    flush=True,
                )
                torch.set_num_threads(args.threads)
                state["ph"], state["start"] = Phases(), time.perf_counter()

        trainer.add_callback(Interleave())
        instrument_trl(trainer, lambda: state["ph"])
        try:
            trainer.train()
        finally:
            r1.close()
            if pool is not None:
                pool.close()
    meta = {"params": params, "trl_init_s": trl_init, "r1hpc_init_s": r1.init_s, "threads": torch.get_num_threads()}
    return r1_steps[args.warmup :], trl_steps[args.warmup :], meta


def median(steps: list[Phases], name: str) -> float:
    return statistics.median(s.secs.get(name, 0.0) for s in steps)


def report(args: argparse.Namespace, r1: list[Phases], trl: list[Phases], meta: dict[str, Any]) -> str:
    import accelerate
    import transformers
    import trl as trl_pkg

    lines = [
        f"$ {shlex.join(['.venv/bin/python', 'bench/bench_grpo_vs_trl.py', *sys.argv[1:]])}",
        "",
        f"versions: torch {torch.__version__}, transformers {transformers.__version__}, trl {trl_pkg.__version__}, "
        f"accelerate {accelerate.__version__}; python {sys.version.split()[0]}; {os.cpu_count()} cores, "
        f"torch threads {meta['threads']}",
        f"model: tiny Qwen2, {meta['params'] / 1e6:.2f}M params ({args.layers} layers x {args.hidden}); "
        f"{args.prompts} prompts x G={args.group} = {args.prompts * args.group} completions/step, "
        f"max_new_tokens {args.max_new_tokens}, micro-batch {args.micro_batch}, T={args.temperature}, "
        f"KL {args.kl}; TRL rewards {args.trl_rewards}; r1hpc generator {args.generator}, TRL's HF generate",
        f"median of {len(r1)} timed steps after {args.warmup} warm-up, interleaved (TRL step k, r1hpc step k)",
        "",
        "| phase | r1hpc s (median) | TRL s (median) | r1hpc / TRL | r1hpc s (min) | TRL s (min) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows: list[tuple[str, tuple[str, ...]]] = [
        ("generate", ("generate",)),
        ("score", ("score",)),
        *((f"update: {n}", (n,)) for n in UPDATE),
        ("update (sum)", UPDATE),
        ("publish (save + manifest)", ("publish (save + manifest)",)),
        ("reload (into generator)", ("reload (into generator)",)),
        ("publish + reload (sum)", ("publish (save + manifest)", "reload (into generator)")),
        ("other", ("other",)),
        ("total", ("total",)),
    ]
    for label, names in rows:
        a, b = (statistics.median(sum(s.secs.get(n, 0.0) for n in names) for s in x) for x in (r1, trl))
        ratio = f"{a / b:.2f}" if b > 1e-4 else "-"
        lo_a, lo_b = (min(sum(s.secs.get(n, 0.0) for n in names) for s in x) for x in (r1, trl))
        lines.append(f"| {label} | {a:.3f} | {b:.3f} | {ratio} | {lo_a:.3f} | {lo_b:.3f} |")
    ca = statistics.median(sum(s.secs.get(n, 0.0) for n in COMPUTE) for s in r1)
    cb = statistics.median(sum(s.secs.get(n, 0.0) for n in COMPUTE) for s in trl)
    ta, tb = median(r1, "total"), median(trl, "total")
    lines += [
        "",
        f"ratio r1hpc / TRL, whole step: {ta / tb:.2f}",
        f"ratio r1hpc / TRL, whole step, best of {len(r1)} (less sensitive to other load): "
        f"{min(s.secs['total'] for s in r1) / min(s.secs['total'] for s in trl):.2f}",
        f"ratio r1hpc / TRL, compute only ({' + '.join(COMPUTE)}): {ca / cb:.2f}",
        f"one-time setup, not in the steps: TRL trainer construction (models + ref + dataset) "
        f"{meta['trl_init_s']:.2f} s; r1hpc rollout task (generator + pool) and train job (policy, AdamW) "
        f"{meta['r1hpc_init_s']:.2f} s",
        f"mean completion tokens per step: r1hpc {statistics.mean(s.info['completion tokens'] for s in r1):.1f}, "
        f"TRL {statistics.mean(s.info['completion tokens'] for s in trl):.1f}",
        "no-grad log-prob passes over the step's sequences: r1hpc "
        f"{r1[0].calls['log-probs, no grad (old/ref)']} (ref; old = detached new when on-policy), TRL "
        f"{trl[0].calls['log-probs, no grad (old/ref)']} (ref; old = detached new when on-policy)",
        "per step totals, r1hpc: " + ", ".join(f"{s.secs['total']:.2f}" for s in r1),
        "per step totals, TRL:   " + ", ".join(f"{s.secs['total']:.2f}" for s in trl),
        f"load average at the end: {os.getloadavg()[0]:.1f}",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step")
    ap.add_argument("--group", type=int, default=8, help="G, completions per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--micro-batch", type=int, default=16, help="sequences per forward/backward")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--kl", type=float, default=0.001, help="KL coefficient (TRL beta)")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=384)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch threads, both sides")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps of each implementation")
    ap.add_argument("--steps", type=int, default=5, help="timed steps of each implementation")
    ap.add_argument("--trl-rewards", choices=("inprocess", "pool"), default="inprocess")
    ap.add_argument(
        "--generator",
        choices=("hf", "vllm"),
        default="hf",
        help="r1hpc's rollout backend (grpo.generator; hf is the demo's). TRL always uses HF generate here",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="also write the report (markdown) here")
    ap.add_argument(
        "--require-peer", action="store_true", help="exit 1 when TRL is not installed (default: say so and exit 0)"
    )
    args = ap.parse_args()
    if importlib.util.find_spec("trl") is None:
        print(
            "bench_grpo_vs_trl: skipped, its peer TRL is not installed "
            "(.venv/bin/pip install -c constraints.txt trl==1.16.0)"
        )
        return 1 if args.require_peer else 0
    print(f"$ {shlex.join(['.venv/bin/python', 'bench/bench_grpo_vs_trl.py', *sys.argv[1:]])}", flush=True)
    r1, trl, meta = run(args)
    text = report(args, r1, trl, meta)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":  # required: the scoring WorkerPool's forkserver re-imports __main__
    sys.exit(main())
