"""Code accuracy reward: run the completion's program on the example's tests, in the sandbox.

The program is the last fenced ```python (or ```py / ```python3) block after the chain of thought
(after ``</think>``, or anywhere when there is none); failing that, the content of the last
``<answer>`` block (a plain ``` fence around it is removed). No program: 0.0.

``example["tests"]``: a non-empty list of ``{"input": str, "output": str}``. Each test runs the
program once in ``sandbox.run_python`` with the input on stdin; it passes if the run is "ok" and
its stdout equals the expected output after stripping the whole text and each line (so trailing
spaces and the final newline never matter; line breaks and inner spaces do). Reward = passed /
total tests. Examples without "tests" are not code tasks: None.

Optional per-example limits: ``time_limit_s`` (wall seconds per test, default 4) and
``memory_limit_mb`` (default 1024). A program that does not compile (SyntaxError...) fails every test, so
the remaining tests are not run.
"""

from __future__ import annotations

import re

from r1hpc.rewards.format import THINK_CLOSE, answer_content, full_text
from r1hpc.rewards.sandbox import SandboxConfig, SandboxLimits, run_python

_PY_FENCE = re.compile(r"```(?:python3?|py)[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_ANY_FENCE = re.compile(r"\A\s*```[A-Za-z0-9]*[ \t]*\n(.*?)```\s*\Z", re.DOTALL)


def extract_program(completion: str, example: dict) -> str | None:
    """The program to run (see module doc), or None."""
    text = full_text(completion, example)
    cut = text.rfind(THINK_CLOSE)
    region = text[cut + len(THINK_CLOSE) :] if cut >= 0 else text
    blocks = _PY_FENCE.findall(region)
    if blocks:
        return blocks[-1]
    answer = answer_content(completion, example)
    if answer is None or not answer.strip():
        return None
    fenced = _ANY_FENCE.match(answer)
    return fenced.group(1) if fenced else answer


def _normalise(output: str) -> list[str]:
    return [line.strip() for line in output.strip().splitlines()]


def _tests(example: dict) -> list[tuple[str, str]]:
    tests = example["tests"]
    if not isinstance(tests, list) or not tests:
        raise ValueError(f"example['tests'] must be a non-empty list, got {type(tests).__name__}")
    out = []
    for i, t in enumerate(tests):
        if not (isinstance(t, dict) and isinstance(t.get("input"), str) and isinstance(t.get("output"), str)):
            raise ValueError(f"example['tests'][{i}] must be a dict with str 'input' and 'output', got {t!r:.200}")
        out.append((t["input"], t["output"]))
    return out


def _limits(example: dict) -> SandboxLimits:
    wall = example.get("time_limit_s", 4.0)
    mem = example.get("memory_limit_mb", 1024)
    if isinstance(wall, bool) or not isinstance(wall, (int, float)) or not wall > 0:
        raise ValueError(f"example['time_limit_s'] must be a positive number, got {wall!r}")
    if isinstance(mem, bool) or not isinstance(mem, int) or mem < 64:
        raise ValueError(f"example['memory_limit_mb'] must be an int >= 64, got {mem!r}")
    return SandboxLimits(wall_s=float(wall), memory_mb=mem)


def code_reward(completion: str, example: dict, config: SandboxConfig | None = None) -> float | None:
    """Fraction of ``example["tests"]`` the completion's program passes; None without tests."""
    if "tests" not in example:
        return None
    tests = _tests(example)
    limits = _limits(example)
    program = extract_program(completion, example)
    if program is None:
        return 0.0
    passed = 0
    for stdin, expected in tests:
        res = run_python(program, stdin, limits, config)
        if res.status == "ok" and _normalise(res.stdout) == _normalise(expected):
            passed += 1
        elif res.detail.startswith("compile error"):
            return 0.0
    return passed / len(tests)
