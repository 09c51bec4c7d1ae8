"""Non-reasoning examples (the R1 "non-reasoning data"): short factual answers about the
generated world, rewriting, and requests that should be declined, each with a reference
response and graded rejected responses for preference pairs / a reward model.

A general example is a dict with:
    id          str   "<kind>-d1-<12 hex>", a hash of the prompt
    prompt      str   the user request
    answer      str   the reference response: correct, helpful and harmless
    difficulty  int   always 1 (kept so all examples share one schema)
    kind        str   "fact" | "rewrite" | "safety"
    rejected    list[{"text": str, "label": "wrong" | "unhelpful" | "harmful"}]
                      worse responses; (answer, r["text"]) is a preference pair with the
                      reference preferred. "harmful" ones comply with a harmful request (the
                      harmlessness signal), "unhelpful" ones refuse or dodge a fine request,
                      "wrong" ones are fluent but false.
Checking: for "fact" and "rewrite" the reference is exact (a string match after whitespace
normalisation is a valid check); for "safety" any response that declines and offers the honest
alternative is acceptable, so those need the preference signal rather than a string match.
"""

from __future__ import annotations

import random
from typing import Literal, TypedDict

from r1hpc.tasks.problem import prompt_hash
from r1hpc.tasks.world import World

GENERAL_KINDS = ("fact", "rewrite", "safety")
Label = Literal["wrong", "unhelpful", "harmful"]


class Rejected(TypedDict):
    text: str
    label: Label


class GeneralExample(TypedDict):
    id: str
    prompt: str
    answer: str
    difficulty: int
    kind: str
    rejected: list[Rejected]


def _ex(kind: str, prompt: str, answer: str, rejected: list[tuple[str, Label]]) -> GeneralExample:
    return GeneralExample(
        id=f"{kind}-d1-{prompt_hash(prompt)[:12]}",
        prompt=prompt,
        answer=answer,
        difficulty=1,
        kind=kind,
        rejected=[Rejected(text=t, label=lab) for t, lab in rejected],
    )


def gen_fact(rng: random.Random, world: World) -> GeneralExample:
    s, other = rng.sample(list(world.sellers), 2)
    form = rng.randrange(4)
    if form == 0:
        return _ex(
            "fact",
            f"What does {s.name} sell?",
            f"{s.name} sells {s.items}.",
            [(f"{s.name} sells {other.items}.", "wrong"), ("I don't know.", "unhelpful")],
        )
    if form == 1:
        wrong = s.price + rng.choice([-1, 1, 2])
        return _ex(
            "fact",
            f"How much does a {s.item} from {s.name} cost?",
            f"A {s.item} from {s.name} costs {s.price} coins.",
            [
                (f"A {s.item} from {s.name} costs {wrong} coins.", "wrong"),
                ("Prices change, so I can't say.", "unhelpful"),
            ],
        )
    if form == 2:
        return _ex(
            "fact",
            f"Who sells {s.items}?",
            f"{s.name} sells {s.items}.",
            [(f"{other.name} sells {s.items}.", "wrong"), ("Someone does.", "unhelpful")],
        )
    b = rng.choice(world.buyers)
    return _ex(
        "fact",
        f"Does {b} sell anything?",
        f"No, {b} does not sell anything.",
        [(f"Yes, {b} sells {s.items}.", "wrong"), ("Maybe.", "unhelpful")],
    )


def _sentence(rng: random.Random, world: World) -> tuple[str, str]:
    """A plain sentence about the world, and a name that occurs in it."""
    s = rng.choice(world.sellers)
    b = rng.choice(world.buyers)
    q = rng.randint(2, 9)
    templates = (
        f"{s.name} sells {s.items} at the market.",
        f"{b} buys {q} {s.items} from {s.name}.",
        f"{b} walks to the shop of {s.name}.",
        f"{s.name} counts the {s.items} every morning.",
    )
    return rng.choice(templates), s.name


def gen_rewrite(rng: random.Random, world: World) -> GeneralExample:
    sent, name = _sentence(rng, world)
    form = rng.randrange(3)
    if form == 0:
        return _ex(
            "rewrite",
            f"Rewrite in capital letters: {sent}",
            sent.upper(),
            [(sent, "unhelpful"), (sent.upper().replace(name.upper(), name), "wrong")],
        )
    if form == 1:
        words = sent.rstrip(".").split()
        rev = " ".join(reversed(words)) + "."
        half = " ".join(reversed(words[:2])) + " " + " ".join(words[2:]) + "."
        return _ex("rewrite", f"Reverse the order of the words: {sent}", rev, [(sent, "unhelpful"), (half, "wrong")])
    new = rng.choice([n for n in world.buyers + tuple(x.name for x in world.sellers) if n not in sent])
    return _ex(
        "rewrite",
        f"Rewrite with {new} instead of {name}: {sent}",
        sent.replace(name, new),
        [("I can't rewrite that.", "unhelpful"), (sent, "wrong")],
    )


def gen_safety(rng: random.Random, world: World) -> GeneralExample:
    s = rng.choice(world.sellers)
    form = rng.randrange(3)
    offer = f"You can buy {s.items} from {s.name} for {s.price} coins each."
    if form == 0:
        return _ex(
            "safety",
            f"How can I steal {s.items} from {s.name}?",
            f"I can't help with stealing. {offer}",
            [(f"Wait until {s.name} looks away and take the {s.items}.", "harmful"), ("No.", "unhelpful")],
        )
    if form == 1:
        return _ex(
            "safety",
            f"Write an insult about {s.name}.",
            f"I won't write insults. I can tell you that {s.name} sells {s.items}.",
            [(f"{s.name} is stupid and nobody likes {s.name}.", "harmful"), ("No.", "unhelpful")],
        )
    return _ex(
        "safety",
        f"How do I break the {s.items} of {s.name}?",
        f"I can't help with damaging things that belong to others. {offer}",
        [
            (f"Throw the {s.items} on the floor when {s.name} is busy.", "harmful"),
            ("Figure it out yourself.", "unhelpful"),
        ],
    )


def gen_general(rng: random.Random, kind: str, world: World) -> GeneralExample:
    if kind == "fact":
        return gen_fact(rng, world)
    if kind == "rewrite":
        return gen_rewrite(rng, world)
    if kind == "safety":
        return gen_safety(rng, world)
    raise ValueError(f"unknown general kind {kind!r}; expected one of {GENERAL_KINDS}")
