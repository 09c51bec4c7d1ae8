"""The worker pool under hostile input, score_batch aggregation, and reward-weight validation."""

from __future__ import annotations

import os
import signal
import time

import pytest

from r1hpc.rewards import REWARD_FUNCS
from r1hpc.rewards.combine import combine, validate_weights
from r1hpc.rewards.isolation import WorkerPool, available_cpus
from r1hpc.rewards.scorer import score_batch

LIMIT_S = 2.0


@pytest.fixture(scope="module")
def pool():
    with WorkerPool(2, item_timeout_s=LIMIT_S, memory_limit_bytes=1024**3) as p:
        yield p


HOSTILE = [
    "The answer is \\boxed{10**10**10**10}",
    "\\boxed{10^{10^{10^{10}}}}",
    "\\boxed{9^{9^{9^9}}}",
    "x" * 1_000_000 + "\\boxed{" + "9" * 100_000 + "}",
    "\\boxed{" * 200_000,
    "\\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}",
]


def test_hostile_inputs_end_within_limit_and_are_counted(pool):
    examples = [{"answer": "5"}] * len(HOSTILE)
    t0 = time.monotonic()
    res = score_batch(HOSTILE, examples, {"accuracy_math": 1.0}, pool=pool, progress=False)
    wall = time.monotonic() - t0
    st = res.statuses["accuracy_math"]
    assert all(s in ("ok", "timeout", "memory") for s in st), st
    # The towers used to run into the limit; accuracy_math now compares answers whose value would
    # be huge as written, without evaluating them (issue 13), so they may also end "ok" with 0.
    assert all(s in ("ok", "timeout", "memory") for s in st[:3]), st
    assert res.counts["accuracy_math"]["timeout"] == st.count("timeout")
    assert res.values["accuracy_math"] == [0.0] * len(HOSTILE)
    assert res.totals == [0.0] * len(HOSTILE)
    assert res.num_failed == st.count("timeout") + st.count("memory")
    # Each slow item is cut at LIMIT_S; 2 workers share them.
    n_slow = st.count("timeout")
    assert wall <= LIMIT_S * -(-n_slow // pool.num_workers) + 1.0 + 0.5 * len(HOSTILE), (wall, st)
    for o in pool.run([(REWARD_FUNCS["accuracy_math"], (c, {"answer": "5"})) for c in HOSTILE]):
        assert o.seconds <= LIMIT_S + 1.0, o


def test_pool_survives_killed_and_crashing_workers(pool):
    before = pool.restarts
    out = pool.run(
        [
            (os.abort, ()),  # worker crashes (SIGABRT)
            (time.sleep, (60,)),  # stuck: killed at the deadline
            (bytearray, (10**10,)),  # 10 GB > RLIMIT_AS: MemoryError inside the worker
            (pow, (10, 10**10**2)),  # memory bomb in C: MemoryError or deadline
            (int, ("not a number",)),  # ordinary exception
            (abs, (-3,)),
        ]
    )
    assert [o.status for o in out[:3]] == ["error", "timeout", "memory"]
    assert "exit code" in out[0].message and "killed after" in out[1].message
    assert out[3].status in ("memory", "timeout")
    assert out[4].status == "error" and "ValueError" in out[4].message
    assert out[5].status == "ok" and out[5].value == 3
    assert pool.restarts >= before + 2
    # A worker killed from outside while idle is replaced; its next item still runs.
    victim = pool._workers[0].proc
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(5)
    out = pool.run([(abs, (-i,)) for i in range(200)])
    assert [o.value for o in out] == list(range(200))
    assert all(w.proc.is_alive() for w in pool._workers)


def test_per_reward_aggregation(pool):
    completions = [
        "<think>\nadd them\n</think>\n<answer>\n\\boxed{4}\n</answer>",
        "<think>\nadd them\n</think>\n<answer>\n\\boxed{5}\n</answer>",
        "the answer is \\boxed{4}",
        "\\boxed{10^{10^{10^{10}}}}",
    ]
    examples = [{"answer": "4"}, {"answer": "4"}, {"answer": "4"}, {"answer": "4"}]
    weights = {"accuracy_math": 2.0, "format": 0.5, "language_consistency": 0.25}
    res = score_batch(completions, examples, weights, pool=pool, progress=False)
    assert res.values["accuracy_math"] == [1.0, 0.0, 1.0, 0.0]
    assert res.statuses["accuracy_math"][:3] == ["ok"] * 3
    # The tower is compared as written since issue 13 (no evaluation): "ok" with 0, or cut at the limit.
    assert res.statuses["accuracy_math"][3] in ("ok", "timeout", "memory")
    assert res.counts["accuracy_math"]["ok"] == 3 + (res.statuses["accuracy_math"][3] == "ok")
    # The format reward must tell the well-formed completions from the bare one.
    fmt = res.values["format"]
    assert fmt[0] == fmt[1] and fmt[0] is not None and fmt[2] is not None and fmt[0] > fmt[2]
    for i in range(len(completions)):
        expected = sum(w * (res.values[k][i] or 0.0) for k, w in weights.items())
        assert res.totals[i] == pytest.approx(expected)
    assert res.totals[0] > res.totals[1]
    for name in weights:
        assert sum(res.counts[name].values()) == len(completions)


def test_errors_and_not_applicable_are_counted(pool):
    # An example without "answer" makes accuracy_math raise: counted as error, scores 0.
    res = score_batch(
        ["\\boxed{1}", "\\boxed{1}"], [{"answer": "1"}, {}], {"accuracy_math": 1.0}, pool=pool, progress=False
    )
    assert res.statuses["accuracy_math"] == ["ok", "error"]
    assert res.values["accuracy_math"] == [1.0, 0.0]
    assert res.counts["accuracy_math"]["error"] == 1
    assert 'no "answer" key' in res.messages["accuracy_math"][0]
    # The code reward does not apply to a math example: None, not a failure.
    res = score_batch(["\\boxed{1}"], [{"answer": "1"}], {"accuracy_math": 1.0, "code": 1.0}, pool=pool, progress=False)
    assert res.values["code"] == [None] and res.statuses["code"] == ["not_applicable"]
    assert res.totals == [1.0]


def test_score_batch_rejects_bad_arguments(pool):
    with pytest.raises(ValueError, match="2 completions but 1 examples"):
        score_batch(["a", "b"], [{"answer": "1"}], {"accuracy_math": 1.0}, pool=pool)
    with pytest.raises(TypeError, match=r"completions\[0\]"):
        score_batch([None], [{"answer": "1"}], {"accuracy_math": 1.0}, pool=pool)
    with pytest.raises(ValueError, match="did you mean 'accuracy_math'"):
        score_batch(["a"], [{"answer": "1"}], {"acuracy_math": 1.0}, pool=pool)


def test_score_batch_with_its_own_pool_and_progress_bar(capsys):
    res = score_batch(["\\boxed{2}"], [{"answer": "2"}], {"accuracy_math": 1.0}, num_workers=1, progress=True)
    assert res.totals == [1.0]
    assert "rewards" in capsys.readouterr().err


@pytest.mark.parametrize(
    "weights, message",
    [
        (
            {"acuracy_math": 1.0},
            "reward_weights.acuracy_math: unknown reward 'acuracy_math'; did you mean 'accuracy_math'",
        ),
        ({"formatt": 1.0}, "did you mean 'format'"),
        ({"zzz": 1.0}, "unknown reward 'zzz' (valid:"),
        ({"format": float("nan")}, "reward_weights.format: weight must be a finite number"),
        ({"format": float("inf")}, "finite number"),
        ({"format": "1.0"}, "finite number, got '1.0'"),
        ({"format": True}, "finite number, got True"),
        ({"format": None}, "finite number"),
        ({}, "no rewards configured"),
        ([("format", 1.0)], "expected a mapping"),
    ],
)
def test_weight_validation_errors(weights, message):
    with pytest.raises(ValueError) as e:
        validate_weights(weights, REWARD_FUNCS)
    assert message in str(e.value)


def test_weight_validation_and_combine():
    w = validate_weights({"accuracy_math": 1, "format": 0.5, "overlong": -0.0}, REWARD_FUNCS, where="cfg.rl")
    assert w == {"accuracy_math": 1.0, "format": 0.5, "overlong": 0.0}
    assert combine({"accuracy_math": 1.0, "format": 0.0, "overlong": None}, w) == 1.0
    with pytest.raises(KeyError, match="no value for weighted reward 'format'"):
        combine({"accuracy_math": 1.0}, w)
    with pytest.raises(ValueError, match=r"^cfg\.rl\.x"):
        validate_weights({"x": 1.0}, REWARD_FUNCS, where="cfg.rl")


def test_reward_table_is_explicit():
    assert set(REWARD_FUNCS) == {"accuracy_math", "format", "language_consistency", "code", "overlong"}


def test_available_cpus_honours_slurm(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert available_cpus() == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "lots")
    with pytest.raises(ValueError, match="SLURM_CPUS_PER_TASK='lots'"):
        available_cpus()
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert available_cpus() == len(os.sched_getaffinity(0))


def test_pool_rejects_plain_fork():
    with pytest.raises(ValueError, match="plain fork is unsafe"):
        WorkerPool(1, start_method="fork")  # type: ignore[arg-type]


def test_code_reward_runs_in_the_pool_with_its_own_limit(pool):
    # The code reward starts sandboxed programs from inside a worker (daemonic, RLIMIT_AS set).
    completion = "<think>\ndouble it\n</think>\n<answer>\n```python\nprint(int(input()) * 2)\n```\n</answer>"
    example = {"tests": [{"input": "2\n", "output": "4"}, {"input": "5\n", "output": "10"}]}
    slow = "<think>\nwait\n</think>\n<answer>\n```python\nimport time\ntime.sleep(30)\n```\n</answer>"
    res = score_batch(
        [completion, slow], [example, example], {"code": 1.0}, pool=pool, progress=False, timeouts={"code": 1.0}
    )
    assert res.statuses["code"][1] == "timeout" and "limit 1.0 s" in res.messages["code"][0]
    assert res.statuses["code"][0] in ("ok", "timeout")  # two sandbox starts may exceed 1 s on a busy node
    res = score_batch([completion], [example], {"code": 1.0}, pool=pool, progress=False, timeouts={"code": 30.0})
    assert res.values["code"] == [1.0], res.messages
    with pytest.raises(ValueError, match="timeouts.format: not one of the configured rewards"):
        score_batch([completion], [example], {"code": 1.0}, pool=pool, timeouts={"format": 1.0})
    with pytest.raises(ValueError, match="timeouts.code: expected a positive number"):
        score_batch([completion], [example], {"code": 1.0}, pool=pool, timeouts={"code": 0})
