"""The learned reward of rl_all: helpfulness and harmlessness, as one model with two scalar heads.

R1 uses a helpfulness reward model on the final summary only (so the reward does not reach into
the reasoning) and a harmlessness reward model on the whole response. Here both are heads of one
`Qwen2ForSequenceClassification` (num_labels=2: 0 = helpfulness, 1 = harmlessness) whose
backbone is models/base; the heads start at zero. Each head reads a different view of a sample:

    helpfulness view   prompt + " </think> <answer> {answer content} </answer>" + eos
                       (the chain of thought removed; a sample with no <answer> block gets the
                       fixed helpfulness NO_ANSWER_HELPFULNESS = 0.0 without being scored)
    harmlessness view  prompt + the whole completion + eos

and the head's output at the last token (eos) is the reward. Training is Bradley-Terry,
-log sigmoid(r_chosen - r_rejected) on the pair's head, plus a small centering term
CENTER_COEF * (r_chosen + r_rejected)^2 that pins the midpoint of chosen and rejected at 0, so
that sigmoid(r) reads as "closer to a preferred than to a rejected answer" (> 0.5) and a fixed
threshold (rejection.judge_min_score) means something.

    train_reward_model(run_dir)   pairs from data/general_train (reference answer preferred to each
        `rejected` text: wrong/unhelpful -> helpfulness head, harmful -> harmlessness head, the
        harmful text placed both in the answer and in the chain of thought) and from
        data/problems_train (correct vs wrong final answer -> helpfulness; a worked solution vs
        the same with a harmful sentence in its reasoning -> harmlessness); on both sides the
        reference vs an off-topic answer (a worked math answer to a request, a request's answer
        to a problem) -> helpfulness; resumable through
        train_state/reward_model; held-out pairwise accuracy on data/general_heldout (and
        problems_heldout math pairs) logged; publishes models/reward_model/v0000 with the tokenizer.
    score_with_reward_model(ctx, prompts, completions)   0.5 * (sigmoid(helpfulness) +
        sigmoid(harmlessness)) in [0, 1] per sample; the model is cached per process. It runs in
        rollout tasks (rl_all) and as the judge of rejection sampling, never in the trainer.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from r1hpc import preemption, recipe
from r1hpc.model.prompting import PromptFormat
from r1hpc.stages.common import StageContext, log_metrics, prompt_format, publish_policy, read_data, stage_seed
from r1hpc.store import latest_model, list_versions
from r1hpc.train.checkpoint import load_latest_checkpoint, save_periodically
from r1hpc.train.sft import lr_factor

__all__ = [
    "HEADS",
    "NO_ANSWER_HELPFULNESS",
    "helpfulness_view",
    "harmlessness_view",
    "build_pairs",
    "train_reward_model",
    "reward_model_components",
    "score_with_reward_model",
]

STAGE = "reward_model"
HEADS = ("helpfulness", "harmlessness")
NO_ANSWER_HELPFULNESS = 0.0
CENTER_COEF = 0.01
GENERAL_SHARE = 2 / 3  # of the pairs; math pairs fill the rest (rl_all scores math completions)
SCORE_BATCH = 32
# The chain of thought of training views whose source has none (general examples).
NEUTRAL_THINK = "Let me think about the request."


def _answer_of(prompt: str, completion: str) -> str | None:
    from r1hpc.rewards.format import answer_content  # string operations only

    return answer_content(completion, {"prompt_ends_with_think": prompt.rstrip().endswith("<think>")})


def helpfulness_view(prompt: str, completion: str) -> str | None:
    """What the helpfulness head reads: the final answer only (None when there is no answer)."""
    answer = _answer_of(prompt, completion)
    if answer is None or not answer.strip():
        return None
    return f"{prompt} </think> <answer> {answer.strip()} </answer>"


def harmlessness_view(prompt: str, completion: str) -> str:
    """What the harmlessness head reads: the whole response, reasoning included."""
    return prompt + completion


def _completion(think: str, answer: str) -> str:
    return f" {think} </think> <answer> {answer} </answer>"


def _pair(head: str, prompt: str, chosen: str, rejected: str, source: str, label: str) -> dict[str, Any]:
    """A preference pair over completions, turned into the views of its head."""
    if head == "helpfulness":
        a, b = helpfulness_view(prompt, chosen), helpfulness_view(prompt, rejected)
    else:
        a, b = harmlessness_view(prompt, chosen), harmlessness_view(prompt, rejected)
    return {"head": HEADS.index(head), "chosen": a, "rejected": b, "source": source, "label": label}


def _general_pairs(
    examples: list[dict[str, Any]], off_topic: list[str], rng: random.Random, fmt: PromptFormat
) -> list[dict[str, Any]]:
    """Per general example: its reference preferred to each rejected text, and to an answer of
    another kind of prompt (off_topic: a worked math answer), so that the head reads the prompt."""
    out = []
    for ex in examples:
        prompt = fmt.render(ex)
        good = _completion(NEUTRAL_THINK, ex["answer"])
        if off_topic:
            out.append(_pair("helpfulness", prompt, good, rng.choice(off_topic), "general", "off_topic"))
        for rej in ex["rejected"]:
            if rej["label"] == "harmful":
                out.append(
                    _pair("harmlessness", prompt, good, _completion(NEUTRAL_THINK, rej["text"]), "general", "harmful")
                )
                # the same harm in the reasoning only: the head must read the whole output
                out.append(
                    _pair(
                        "harmlessness",
                        prompt,
                        good,
                        _completion(rej["text"], ex["answer"]),
                        "general",
                        "harmful_in_think",
                    )
                )
            else:
                out.append(
                    _pair("helpfulness", prompt, good, _completion(NEUTRAL_THINK, rej["text"]), "general", rej["label"])
                )
    return out


def _worked_answer(problem: dict[str, Any]) -> str:
    """A problem's solution as a completion: its steps reasoned, its answer stated."""
    return _completion(" ".join(problem.get("solution_steps", [])), f"The answer is {problem['answer']}")


def _math_pairs(
    problems: list[dict[str, Any]], harmful: list[str], off_topic: list[str], rng: random.Random, fmt: PromptFormat
) -> list[dict[str, Any]]:
    """Per problem: its correct answer preferred to a wrong one and to an off-topic answer (a
    general example's reference), its clean reasoning to one with a harmful sentence."""
    from r1hpc.model.pretrain_corpus import wrong_answer  # Fraction arithmetic on reference answers

    out = []
    for p in problems:
        try:
            wrong = wrong_answer(rng, p["answer"])
        except (ValueError, ZeroDivisionError):  # a non-numeric answer (a dataset's "\\frac{\\pi}{2}")
            continue
        prompt = fmt.render(p)
        steps = " ".join(p.get("solution_steps", []))
        good = _worked_answer(p)
        bad = _completion(steps, f"The answer is {wrong}")
        out.append(_pair("helpfulness", prompt, good, bad, "math", "wrong"))
        if off_topic:
            out.append(_pair("helpfulness", prompt, good, rng.choice(off_topic), "math", "off_topic"))
        if harmful:
            out.append(
                _pair(
                    "harmlessness",
                    prompt,
                    good,
                    _completion(f"{steps} {rng.choice(harmful)}", f"The answer is {p['answer']}"),
                    "math",
                    "harmful_in_think",
                )
            )
    return out


def build_pairs(
    general: list[dict[str, Any]],
    problems: list[dict[str, Any]],
    n: int | None,
    seed: int,
    fmt: PromptFormat = PromptFormat(),
) -> list[dict[str, Any]]:
    """Up to n preference pairs (all when n is None): GENERAL_SHARE from general examples, the
    rest math, topped up from either when the other runs out. Deterministic in `seed`."""
    rng = random.Random(seed)
    harmful = sorted({r["text"] for ex in general for r in ex["rejected"] if r["label"] == "harmful"})
    # Answers to the other kind of prompt: a model that answers a request with arithmetic (or a
    # problem with a shop fact) is not helpful, however fluent the answer.
    worked = [_worked_answer(p) for p in problems]
    references = [_completion(NEUTRAL_THINK, ex["answer"]) for ex in general]
    gen = _general_pairs(general, worked, rng, fmt)
    math_ = _math_pairs(problems, harmful, references, rng, fmt)
    rng.shuffle(gen)
    rng.shuffle(math_)
    if n is None:
        return gen + math_
    n_gen = min(len(gen), math.ceil(n * GENERAL_SHARE))
    n_math = min(len(math_), n - n_gen)
    n_gen = min(len(gen), n - n_math)
    pairs = gen[:n_gen] + math_[:n_math]
    rng.shuffle(pairs)
    return pairs


# ---------------------------------------------------------------- model and batches


def _encode(tokenizer: Any, texts: list[str], max_len: int) -> list[list[int]]:
    """Token ids + eos per text, cut from the LEFT to max_len: the answer (the end) is what the
    reward is about, so a long prompt loses its beginning rather than the response its end."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [(x + [tokenizer.eos_token_id])[-max_len:] for x in ids]


def _rewards(model: torch.nn.Module, seqs: list[list[int]], pad_id: int) -> torch.Tensor:
    """(B, 2) head outputs at each sequence's last token; right-padded with pad_id (which the
    model's pooling skips), so positions start at 0 for every row."""
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        att[i, : len(s)] = 1
    return model(input_ids=ids, attention_mask=att).logits


def _pair_margins(
    model: torch.nn.Module, chosen: list[list[int]], rejected: list[list[int]], heads: torch.Tensor, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen, r_rejected), each (B,), on each pair's own head."""
    out = _rewards(model, chosen + rejected, pad_id)
    rows = torch.arange(len(chosen))
    return out[: len(chosen)][rows, heads], out[len(chosen) :][rows, heads]


def _build_model(backbone: Path, pad_id: int) -> torch.nn.Module:
    """A two-head sequence classifier on a causal-LM checkpoint (the run's base or reward_model.init_from).
    pad_id: the pooling finds each row's last token by it (released configs often have none)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        str(backbone),
        num_labels=len(HEADS),
        id2label=dict(enumerate(HEADS)),
        label2id={h: i for i, h in enumerate(HEADS)},
        pad_token_id=pad_id,
        dtype=torch.float32,
    )
    with torch.no_grad():  # deterministic start: every reward 0, whatever from_pretrained drew
        model.score.weight.zero_()
    return model


@torch.no_grad()
def _pairwise_accuracy(
    model: torch.nn.Module, tokenizer: Any, pairs: list[dict[str, Any]], max_len: int
) -> dict[str, float]:
    """Share of pairs with r_chosen > r_rejected (ties count half): overall, per head and per source."""
    if not pairs:
        return {}
    model.eval()
    wins: list[float] = []
    for i in range(0, len(pairs), SCORE_BATCH // 2):
        part = pairs[i : i + SCORE_BATCH // 2]
        rc, rr = _pair_margins(
            model,
            _encode(tokenizer, [p["chosen"] for p in part], max_len),
            _encode(tokenizer, [p["rejected"] for p in part], max_len),
            torch.tensor([p["head"] for p in part]),
            tokenizer.pad_token_id,
        )
        wins.extend(((rc > rr).float() + 0.5 * (rc == rr).float()).tolist())  # a tie is a coin flip
    out = {"accuracy": sum(wins) / len(wins), "pairs": len(wins)}
    for key, groups in (
        ("head", {h: i for i, h in enumerate(HEADS)}),
        ("source", {"general": "general", "math": "math"}),
    ):
        for name, value in groups.items():
            sel = [w for w, p in zip(wins, pairs) if p[key] == value]
            if sel:
                out[f"accuracy_{name}"] = sum(sel) / len(sel)
    return out


# ---------------------------------------------------------------- the job


def train_reward_model(run_dir: str) -> dict[str, Any]:
    """Train the helpfulness/harmlessness reward model; publish models/reward_model/v0000."""
    from r1hpc.model.tokenizer import load_tokenizer

    ctx = StageContext(run_dir)
    existing = [v for v in list_versions(ctx.run, STAGE) if v.version == 0]
    if existing:
        return {"stage": STAGE, "skipped": "already published", **existing[0].meta}
    cfg, s = ctx.cfg, ctx.cfg.reward_model.train
    started = time.time()
    seed = stage_seed(cfg.seed, STAGE, "pairs")
    base = latest_model(ctx.run, recipe.stage(STAGE).init_from, verify="sha256")
    backbone = Path(cfg.reward_model.init_from) if cfg.reward_model.init_from else base.path
    tokenizer = load_tokenizer(backbone, pad_token="" if cfg.reward_model.init_from else cfg.model.pad_token)
    fmt = prompt_format(cfg, tokenizer)
    pairs = build_pairs(
        read_data(ctx, "general_train"), read_data(ctx, "problems_train"), cfg.reward_model.pairs, seed, fmt
    )
    general_heldout = read_data(ctx, "general_heldout")
    # held-out pairs: every general_heldout pair, plus math pairs from as many held-out problems
    heldout_pairs = build_pairs(
        general_heldout, read_data(ctx, "problems_heldout")[: len(general_heldout)], None, seed, fmt
    )
    if not pairs:
        raise ValueError(f"{ctx.run_dir}/data: no preference pairs could be built from general_train / problems_train")
    pad_id = tokenizer.pad_token_id
    model = _build_model(backbone, pad_id)
    chosen = _encode(tokenizer, [p["chosen"] for p in pairs], s.max_len)
    rejected = _encode(tokenizer, [p["rejected"] for p in pairs], s.max_len)
    heads = torch.tensor([p["head"] for p in pairs])

    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(stage_seed(cfg.seed, STAGE, "train"))
    state_dir = ctx.run.train_state_dir(STAGE)
    n, total = len(pairs), max(1, math.ceil(s.epochs * len(pairs) / s.batch_size))
    resumed = load_latest_checkpoint(state_dir, model, optimizer, generator)
    start = resumed[0] if resumed else 0
    order_seed = stage_seed(cfg.seed, STAGE, "order")
    orders: dict[int, torch.Tensor] = {}  # data order = f(seed, epoch): a resumed job sees the same batches

    def rows_of(step: int) -> list[int]:
        rows = []
        for pos in range(step * s.batch_size, (step + 1) * s.batch_size):
            epoch, i = divmod(pos, n)
            if epoch not in orders:
                orders[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(order_seed + epoch))
            rows.append(int(orders[epoch][i]))
        return rows

    metrics: dict[str, Any] = {}
    with preemption.saving_loop():
        for step in range(start, total):
            model.train()
            t0 = time.time()
            for group in optimizer.param_groups:
                group["lr"] = s.lr * lr_factor(step, total, s.warmup_steps)
            rows = rows_of(step)
            optimizer.zero_grad(set_to_none=True)
            loss_sum, wins = 0.0, 0
            for m in range(0, len(rows), s.micro_batch_size):
                part = rows[m : m + s.micro_batch_size]
                rc, rr = _pair_margins(
                    model, [chosen[i] for i in part], [rejected[i] for i in part], heads[part], pad_id
                )
                bt = -F.logsigmoid(rc - rr).sum()
                center = CENTER_COEF * ((rc + rr) ** 2).sum()
                loss = (bt + center) / len(rows)
                loss.backward()
                loss_sum += float(loss.detach())
                wins += int((rc > rr).sum())
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
            if not math.isfinite(grad_norm):
                raise FloatingPointError(f"non-finite gradient norm at reward-model step {step}")
            optimizer.step()
            metrics = {
                "stage": STAGE,
                "step": step + 1,
                "loss": loss_sum,
                "train_accuracy": wins / len(rows),
                "grad_norm": grad_norm,
                "lr": optimizer.param_groups[0]["lr"],
                "step_time_s": time.time() - t0,
            }
            log_metrics(ctx, STAGE, metrics)
            save_periodically(state_dir, step + 1, total, s.save_every, model, optimizer, generator)
    model.eval()
    heldout = _pairwise_accuracy(model, tokenizer, heldout_pairs, s.max_len)
    counts: dict[str, int] = {}
    for p in pairs:
        key = f"pairs_{HEADS[p['head']]}_{p['source']}_{p['label']}"
        counts[key] = counts.get(key, 0) + 1
    summary = {
        "stage": STAGE,
        "init_from": cfg.reward_model.init_from or f"base/{base.name}",
        "heads": list(HEADS),
        "pairs": n,
        "pairs_requested": cfg.reward_model.pairs,
        **dict(sorted(counts.items())),
        "steps": total,
        "final_loss": metrics.get("loss"),
        "heldout_accuracy_at_init": 0.5,  # by construction: the zero heads tie every pair
        **{f"heldout_{k}": v for k, v in heldout.items()},
        "seconds": round(time.time() - started, 1),
    }
    # The held-out figures go on the last step's line (metrics readers keep the last line per step).
    log_metrics(ctx, STAGE, {**metrics, **summary, "step": total})
    version = publish_policy(ctx, STAGE, 0, model, tokenizer, meta=summary)
    _CACHE.clear()
    return {"version": version.name, **summary}


# ---------------------------------------------------------------- scoring (rollout tasks, judge)

_CACHE: dict[str, tuple[Any, Any, int]] = {}


def _loaded(ctx: StageContext) -> tuple[Any, Any, int]:
    """(model, tokenizer, max_len) of the newest reward model, loaded once per process."""
    from transformers import AutoModelForSequenceClassification

    from r1hpc.model.tokenizer import load_tokenizer

    version = latest_model(ctx.run, STAGE)
    key = str(version.path)
    if key not in _CACHE:
        model = AutoModelForSequenceClassification.from_pretrained(key, dtype=torch.float32).eval()
        if model.config.num_labels != len(HEADS):
            raise ValueError(
                f"{key}/config.json: num_labels = {model.config.num_labels}, expected {len(HEADS)} heads {HEADS}"
            )
        _CACHE.clear()  # one reward model per process
        _CACHE[key] = (model, load_tokenizer(key), ctx.cfg.reward_model.train.max_len)
    return _CACHE[key]


@torch.no_grad()
def _head_scores(model: Any, tokenizer: Any, texts: list[str], head: int, max_len: int) -> list[float]:
    """sigmoid(head output) per text, in batches of SCORE_BATCH."""
    out: list[float] = []
    for i in range(0, len(texts), SCORE_BATCH):
        seqs = _encode(tokenizer, texts[i : i + SCORE_BATCH], max_len)
        out.extend(torch.sigmoid(_rewards(model, seqs, tokenizer.pad_token_id)[:, head]).tolist())
    return out


def reward_model_components(ctx: StageContext, prompts: list[str], completions: list[str]) -> list[dict[str, float]]:
    """Per sample {"helpfulness", "harmlessness", "score"}, each in [0, 1] (module docstring)."""
    if len(prompts) != len(completions):
        raise ValueError(f"reward model: {len(prompts)} prompts but {len(completions)} completions")
    if not prompts:
        return []
    model, tokenizer, max_len = _loaded(ctx)
    help_views = [helpfulness_view(p, c) for p, c in zip(prompts, completions)]
    answered = [i for i, v in enumerate(help_views) if v is not None]
    help_scores = [NO_ANSWER_HELPFULNESS] * len(prompts)
    for i, s in zip(answered, _head_scores(model, tokenizer, [help_views[i] for i in answered], 0, max_len)):
        help_scores[i] = s
    harm_scores = _head_scores(
        model, tokenizer, [harmlessness_view(p, c) for p, c in zip(prompts, completions)], 1, max_len
    )
    return [{"helpfulness": h, "harmlessness": g, "score": 0.5 * (h + g)} for h, g in zip(help_scores, harm_scores)]


def score_with_reward_model(ctx: StageContext, prompts: list[str], completions: list[str]) -> list[float]:
    """The learned reward in [0, 1]: mean of sigmoid(helpfulness of the final answer) and
    sigmoid(harmlessness of the whole output). prompts are rendered (PromptFormat.render)."""
    return [c["score"] for c in reward_model_components(ctx, prompts, completions)]
