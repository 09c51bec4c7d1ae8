"""A small generated world (people who each sell one kind of item at a fixed price) and the
word problems set in it.

The world is a pure function of its seed, so the facts stated in the pretraining corpus, the
word problems and the factual questions of the non-reasoning set (`general.py`) agree.
Word problems state every number they need, so they are solvable without knowing the world.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from r1hpc.tasks.problem import Problem, make_problem

NAMES = (
    "Ana",
    "Ben",
    "Cai",
    "Dora",
    "Eli",
    "Fay",
    "Gus",
    "Hana",
    "Ivo",
    "Jun",
    "Kim",
    "Lea",
    "Max",
    "Nia",
    "Omar",
    "Pia",
)
# (singular, plural)
ITEMS = (
    ("apple", "apples"),
    ("pear", "pears"),
    ("cup", "cups"),
    ("pen", "pens"),
    ("book", "books"),
    ("lamp", "lamps"),
    ("hat", "hats"),
    ("sock", "socks"),
    ("plum", "plums"),
    ("egg", "eggs"),
    ("candle", "candles"),
    ("spoon", "spoons"),
)


@dataclass(frozen=True)
class Seller:
    name: str
    item: str  # singular
    items: str  # plural
    price: int  # coins per item


@dataclass(frozen=True)
class World:
    """Who sells what at which price; `buyers` are the people who sell nothing."""

    sellers: tuple[Seller, ...]
    buyers: tuple[str, ...]

    def seller(self, name: str) -> Seller:
        for s in self.sellers:
            if s.name == name:
                return s
        raise KeyError(f"{name!r} sells nothing in this world; sellers: {[s.name for s in self.sellers]}")

    def facts(self) -> list[str]:
        """One sentence per fact, in a fixed order (the corpus shuffles them)."""
        out = []
        for s in self.sellers:
            out.append(f"{s.name} sells {s.items}.")
            out.append(f"{s.name} sells {s.items} for {s.price} coins each.")
            out.append(f"A {s.item} from {s.name} costs {s.price} coins.")
        for b in self.buyers:
            out.append(f"{b} does not sell anything.")
        return out


def make_world(seed: int, n_sellers: int = 10) -> World:
    if not 1 <= n_sellers <= len(ITEMS):
        raise ValueError(f"n_sellers must be in 1..{len(ITEMS)}, got {n_sellers}")
    rng = random.Random(f"world-{seed}")
    names = list(NAMES)
    rng.shuffle(names)
    items = list(ITEMS)
    rng.shuffle(items)
    sellers = tuple(Seller(names[i], items[i][0], items[i][1], rng.randint(2, 9)) for i in range(n_sellers))
    return World(sellers=sellers, buyers=tuple(names[n_sellers:]))


def gen_word(rng: random.Random, difficulty: int, world: World) -> Problem:
    """d1 have/give (+/-) of single digits, d2 price * count, d3 two purchases, d4 two purchases and change."""
    people = list(world.sellers)
    s1, s2 = rng.sample(people, 2)
    buyer = rng.choice(world.buyers + tuple(p.name for p in people if p not in (s1, s2)))
    if difficulty == 1:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        if rng.random() < 0.5:
            prompt = (
                f"{buyer} has {a} {s1.items}. {s1.name} gives {buyer} {b} more {s1.items}. "
                f"How many {s1.items} does {buyer} have now?"
            )
            value, steps = a + b, [f"{a} + {b} = {a + b}"]
        else:
            a, b = max(a, b), min(a, b)
            prompt = (
                f"{buyer} has {a} {s1.items}. {buyer} gives {b} {s1.items} to {s1.name}. "
                f"How many {s1.items} does {buyer} have left?"
            )
            value, steps = a - b, [f"{a} - {b} = {a - b}"]
    elif difficulty == 2:
        q = rng.randint(2, 12)
        prompt = (
            f"{s1.name} sells {s1.items} for {s1.price} coins each. {buyer} buys {q} "
            f"{s1.items}. How many coins does {buyer} pay?"
        )
        value, steps = q * s1.price, [f"{q} * {s1.price} = {q * s1.price}"]
    else:
        q1, q2 = rng.randint(2, 9), rng.randint(2, 9)
        c1, c2 = q1 * s1.price, q2 * s2.price
        prompt = (
            f"{s1.name} sells {s1.items} for {s1.price} coins each and {s2.name} sells "
            f"{s2.items} for {s2.price} coins each. {buyer} buys {q1} {s1.items} and {q2} "
            f"{s2.items}."
        )
        steps = [f"{q1} * {s1.price} = {c1}", f"{q2} * {s2.price} = {c2}", f"{c1} + {c2} = {c1 + c2}"]
        if difficulty == 3:
            prompt += f" How many coins does {buyer} pay in total?"
            value = c1 + c2
        else:
            paid = (c1 + c2) + rng.randint(1, 60)
            paid = -(-paid // 10) * 10  # a round note: 10, 20, ...
            prompt += f" {buyer} pays with {paid} coins. How many coins of change does {buyer} get?"
            value = paid - c1 - c2
            steps.append(f"{paid} - {c1 + c2} = {value}")
    return make_problem("word", difficulty, prompt, value, steps)
