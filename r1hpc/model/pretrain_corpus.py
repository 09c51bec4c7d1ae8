"""The tiny base model's pretraining text: world facts, general Q&A, and TRAIN-split math
problems followed by imperfect worked solutions.

Why imperfect: R1-Zero starts from a base that can sometimes, but not reliably, solve the task
and rarely uses the <think>/<answer> format. So most documents use plain formats ("Q:/A:",
"Problem:/Solution:", "User:/Assistant:"), a fraction of final answers are wrong or missing, and
only `mix.r1_format` of math documents use the tag format (itself sometimes malformed). The
held-out split never enters the corpus.

Why so many answers without steps (`answer_only`): R1-Zero's responses grow because writing the
reasoning out pays. A tiny base that always writes its one or two steps has nothing longer to find
(measured with 10% of such documents: R1-Zero's held-out responses shrank by 3.5 tokens). With 40%,
the base often answers at once, and those answers are mostly wrong where the written step is mostly
right (held-out single-digit sums and differences: 11% without the step, 45% with it), so RL learns to write the
steps: held-out response length 17.8 -> 26.1 tokens and pass@1 0.163 -> 0.344 (seed 0, 500 problems).

Why arithmetic tables: a real base model has seen the basic facts ("7 + 5 = 12") countless
times; worked solutions alone give a tiny model too few of them (measured: a held-out single-digit
sum's fact occurs ~80 times in 50k documents, and the base answered "6 + 0 = 4"). Table documents
(lists of correct one-operation facts, like the times tables on the web) carry only atomic facts,
never a problem's prompt, so held-out problems stay unseen while the knowledge they need is there.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from r1hpc.tasks.dataset import generate_general, generate_problems
from r1hpc.tasks.phrasing import answer_sentences, check_languages, connectives, step_label
from r1hpc.tasks.problem import Problem, fmt_num
from r1hpc.tasks.world import make_world

# The R1-Zero prompt this corpus prepares the base for: the completion continues after
# "<think>" with reasoning, then "</think> <answer> ... </answer>".
R1_ZERO_TEMPLATE = "User: {prompt}\nAssistant: <think>"
SPECIAL_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")


@dataclass(frozen=True)
class CorpusMix:
    """Document shares and the quality of the worked solutions (probabilities)."""

    facts: float = 0.05  # share of documents that are world-fact paragraphs
    general: float = 0.07  # share that are general Q&A (reference answers)
    tables: float = 0.12  # share that are arithmetic tables (correct one-operation facts)
    # math documents: the rest. Per math document:
    r1_format: float = 0.12  # written in the <think>/<answer> tag format
    wrong_final: float = 0.15  # steps shown but the last step and answer are wrong
    no_answer: float = 0.08  # steps shown, the final answer missing
    answer_only: float = 0.40  # no steps, just an answer (right or wrong as above); see below
    broken_tags: float = 0.3  # of r1-format documents: answer outside <answer> tags
    # of math documents, when the task has several languages: narration (step labels, connectives,
    # answer sentence) in a random task language per phrase instead of the problem's own
    mixed_language: float = 0.4
    # share of math documents at difficulty 1..4: easy-heavy, so that a base trained for a few
    # CPU-minutes gets the easy problems partly right and the hard ones rarely
    difficulty_weights: tuple[float, float, float, float] = (0.55, 0.35, 0.07, 0.03)
    languages: tuple[str, ...] = ("en",)  # the task's prompt languages (r1hpc.tasks.phrasing)

    def __post_init__(self) -> None:
        if len(self.difficulty_weights) != 4 or min(self.difficulty_weights) < 0 or sum(self.difficulty_weights) <= 0:
            raise ValueError(
                f"CorpusMix.difficulty_weights must be 4 non-negative numbers with "
                f"a positive sum, got {self.difficulty_weights}"
            )
        check_languages(self.languages, "CorpusMix.languages")
        for name, v in vars(self).items():
            if name in ("difficulty_weights", "languages"):
                continue
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"CorpusMix.{name} must be in [0, 1], got {v}")
        if self.facts + self.general + self.tables > 1.0:
            raise ValueError("CorpusMix.facts + CorpusMix.general + CorpusMix.tables must be <= 1")
        if self.wrong_final + self.no_answer > 1.0:
            raise ValueError("CorpusMix.wrong_final + CorpusMix.no_answer must be <= 1")


def wrong_answer(rng: random.Random, answer: str) -> str:
    """A plausible but different answer (off by a little, or a numerator slip)."""
    v = Fraction(answer)
    for _ in range(10):
        if v.denominator == 1:
            w = v + rng.choice([-10, -2, -1, 1, 2, 10])
        else:
            w = Fraction(v.numerator + rng.choice([-1, 1, 2]), v.denominator)
        if w != v:
            return fmt_num(w)
    return fmt_num(v + 1)


def _steps_text(rng: random.Random, steps: list[str], language: Callable[[], str]) -> str:
    """The steps in one of three styles: bare lines, sentences opened by connectives ("First, ...
    Then ... So ..."), or numbered ("Step 1: ..."); `language()` gives each narration word's language."""
    style = rng.randrange(3)
    if style == 0:
        return "\n".join(steps)
    if style == 1:
        sentences = []
        for i, step in enumerate(steps):
            first, then, so = connectives(language())
            word = so if i == len(steps) - 1 else first if i == 0 else then
            sentences.append(f"{word} {step}.")
        return " ".join(sentences)
    return "\n".join(f"{step_label(language())} {i}: {s}" for i, s in enumerate(steps, 1))


def _narration(rng: random.Random, p: Problem, mix: CorpusMix) -> Callable[[], str]:
    """The language of each narration phrase of one document: the problem's, or (a share
    mix.mixed_language of documents, when the task has several languages) a random one per phrase."""
    own = p.get("language", "en")
    if len(mix.languages) > 1 and rng.random() < mix.mixed_language:
        return lambda: rng.choice(mix.languages)
    return lambda: own


def worked_solution(rng: random.Random, p: Problem, mix: CorpusMix) -> str:
    """One math document: prompt plus an imperfect worked solution in a random format."""
    steps = list(p["solution_steps"])
    answer: str | None = p["answer"]
    language = _narration(rng, p, mix)
    r = rng.random()
    if r < mix.wrong_final:
        answer = wrong_answer(rng, p["answer"])
        if steps and "=" in steps[-1]:
            steps[-1] = steps[-1].rsplit("=", 1)[0] + "= " + answer
    elif r < mix.wrong_final + mix.no_answer:
        answer = None
    if rng.random() < mix.answer_only and answer is not None:
        steps = []
    work = _steps_text(rng, steps, language) if steps else ""
    q = p["prompt"]
    if rng.random() < mix.r1_format:
        tail = (
            ""
            if answer is None
            else (
                f" {answer_sentences(language())[0].format(a=answer)}"
                if rng.random() < mix.broken_tags
                else f" <answer> {answer} </answer>"
            )
        )
        return f"User: {q}\nAssistant: <think> {work} </think>{tail}"
    fin = "" if answer is None else rng.choice((*answer_sentences(language()), "#### {a}")).format(a=answer)
    body = "\n".join(x for x in (work, fin) if x)
    head = rng.choice([f"Question: {q}\nAnswer:", f"Q: {q}\nA:", f"Problem: {q}\nSolution:", f"User: {q}\nAssistant:"])
    return f"{head} {body}" if body else head


def arithmetic_table(rng: random.Random, n_facts: int) -> str:
    """One table document: n_facts correct facts 'a op b = c' (+ and - up to 20, never negative;
    * up to 12), one per line."""
    lines = []
    for _ in range(n_facts):
        op = rng.choice("+-*")
        hi = 12 if op == "*" else 20
        a, b = rng.randint(0, hi), rng.randint(0, hi)
        if op == "-" and b > a:
            a, b = b, a
        c = a + b if op == "+" else a - b if op == "-" else a * b
        lines.append(f"{a} {op} {b} = {c}")
    return "\n".join(lines)


def build_corpus(seed: int, n_docs: int, mix: CorpusMix = CorpusMix(), world_seed: int = 0) -> list[str]:
    """n_docs pretraining documents (no eos; the tokenizer step appends it). Deterministic."""
    if n_docs < 1:
        raise ValueError(f"n_docs must be >= 1, got {n_docs}")
    rng = random.Random(f"corpus-{seed}")
    n_facts = round(n_docs * mix.facts)
    n_general = round(n_docs * mix.general)
    n_tables = round(n_docs * mix.tables)
    n_math = n_docs - n_facts - n_general - n_tables
    world = make_world(world_seed)
    facts = world.facts()
    docs: list[str] = []
    for _ in range(n_facts):
        docs.append(" ".join(rng.sample(facts, k=min(len(facts), rng.randint(3, 8)))))
    for ex in generate_general(seed, "train", n_general, world_seed=world_seed, unique=False):
        head = rng.choice([f"User: {ex['prompt']}\nAssistant:", f"Q: {ex['prompt']}\nA:"])
        docs.append(f"{head} {ex['answer']}")
    for _ in range(n_tables):
        docs.append(arithmetic_table(rng, rng.randint(8, 24)))
    total_w = sum(mix.difficulty_weights)
    for d, w in enumerate(mix.difficulty_weights, 1):
        n_d = round(n_math * w / total_w)
        if n_d:
            for p in generate_problems(
                seed, "train", n_d, difficulties=[d], world_seed=world_seed, unique=False, languages=mix.languages
            ):
                docs.append(worked_solution(rng, p, mix))
    rng.shuffle(docs)
    return docs
