"""The live view of a run (r1hpc.live): built from a run directory written here (the smoke config,
models published through the store, metrics lines, eval shards and summaries as the stages write
them, file times set by hand), its states, the time-left estimate worked out by hand, the log
lines (once per event across polls) and the redrawn terminal block."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from r1hpc.fsio import append_jsonl, atomic_write_json, atomic_write_text
from r1hpc.live import (
    DONE,
    FAILED,
    RUNNING,
    STOPPED,
    WAITING,
    StageView,
    run_view,
)
from r1hpc.live_display import EventLog, LiveDisplay, render_view, results_lines
from r1hpc.store import RunDir, mark_done, publish_model, publish_shard

REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000.0
# The stages of the run built here (a `--stages` subset of the recipe): the others are not in it.
STAGES = ["data", "base", "r1_zero", "eval", "report"]


def _iso(t: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="seconds")


def _job(
    run: Path, stage: str, t: float, job_id: str, kind: str = "train", step: int | None = None, **extra: str
) -> None:
    append_jsonl(
        run / "jobs.jsonl",
        {
            **extra,
            "time": _iso(t),
            "stage": stage,
            "step": step,
            "kind": kind,
            "executor": "slurm",
            "job_id": job_id,
            "task_ids": [job_id],
            "array_size": 0,
        },
    )


def _at(path: Path, t: float) -> None:
    os.utime(path, (t, t))


def _publish(run: Path, stage: str, version: int, t: float, tmp: Path) -> None:
    src = tmp / f"src-{stage}-{version}"
    src.mkdir()
    (src / "weights.bin").write_bytes(bytes([version]) * 16)
    publish_model(RunDir(run), stage, src, version=version)
    _at(run / "models" / stage / f"v{version:04d}" / "MANIFEST.json", t)


def _step_row(step: int, reward: float, accuracy: float, length: float, **extra: float) -> dict:
    return {
        "time": T0 + 140 + 20 * step,
        "step": step,
        "stage": "r1_zero",
        "reward_mean": reward,
        "reward_accuracy_math": accuracy,
        "response_length_mean": length,
        "loss": 0.1,
        **extra,
    }


def _eval_shard(run: Path, model: str, t: float) -> None:
    record = {
        "problem_id": "p0",
        "difficulty": 1,
        "correct": 1.0,
        "format": 1.0,
        "answer": "4",
        "response_tokens": 12,
        "data_source": "generated",
        "model_version": "v0000",
    }
    path = publish_shard(RunDir(run), f"eval-{model}", 0, 0, [record, {**record, "correct": 0.0}])
    _at(path, t)


def _eval_summary(run: Path, model: str, pass1: float, ci: tuple[float, float]) -> None:
    """eval/<model>.json with the keys r1hpc.stages.eval.eval_summary writes (the ones shown)."""
    atomic_write_json(
        run / "eval" / f"{model}.json",
        {
            "stage": model,
            "k": 2,
            "problems": 4,
            "samples": 8,
            "pass_at_1": pass1,
            "pass_at_1_ci": list(ci),
            "pass_at_1_ci_method": "normal",
            "cons_at_k": pass1,
            "cons_at_k_ci": list(ci),
            "format_rate": 1.0,
            "answered_rate": 1.0,
            "mean_response_tokens": 12.0,
            "truncated_rate": 0.0,
            "model_versions": ["v0000"],
        },
    )


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A smoke run with r1_zero.steps=5, seen at T0 + 190 s:
    data    job at T0, done marker at T0+10                    -> done, took 10 s
    base    job at T0+10, v0000 at T0+100                       -> done, took 90 s
    r1_zero v0000 at T0+110, v0001..v0003 at +140, +160, +180    -> 3/5 steps, 20 s per step
    eval    base's shard at T0+130 (30 s after base)             -> 1/2 models evaluated
    """
    run = tmp_path / "smoke"
    run.mkdir()
    config = (REPO / "configs" / "smoke.yaml").read_text()
    assert "r1_zero: {steps: 2," in config and "shards: 1," in config.split("\neval:")[1]
    (run / "config.yaml").write_text(config.replace("r1_zero: {steps: 2,", "r1_zero: {steps: 5,"))
    _job(run, "data", T0, "101")
    _at(mark_done(RunDir(run), "data", "data", {"problems": 64}), T0 + 10)
    _job(run, "base", T0 + 10, "102")
    _publish(run, "base", 0, T0 + 100, tmp_path)
    _job(run, "r1_zero", T0 + 100, "103")
    _job(run, "eval", T0 + 100, "104", kind="eval")
    for v, t in enumerate((110, 140, 160, 180)):
        _publish(run, "r1_zero", v, T0 + t, tmp_path)
    for step, (reward, acc, length) in enumerate(((0.5, 0.25, 30.0), (0.75, 0.4, 28.0), (1.0, 0.5, 21.4))):
        append_jsonl(run / "metrics" / "r1_zero.jsonl", _step_row(step, reward, acc, length))
    _eval_shard(run, "base", T0 + 130)
    return run


RUNNING_NOW = {"103": ["RUNNING"], "104": ["RUNNING"]}


def view_of(run: Path, now: float = T0 + 190, **kw):
    kw.setdefault("job_states", {"101": ["COMPLETED"], "102": ["COMPLETED"], **RUNNING_NOW})
    return run_view(run, stages=STAGES, now=now, **kw)


def test_states_steps_and_last_step(run: Path) -> None:
    view = view_of(run)
    assert [s.name for s in view.stages] == STAGES
    assert {s.name: s.state for s in view.stages} == {
        "data": DONE,
        "base": DONE,
        "r1_zero": RUNNING,
        "eval": RUNNING,
        "report": WAITING,
    }
    r1 = view.stage("r1_zero")
    assert (r1.steps_done, r1.steps_planned) == (3, 5)
    assert r1.last == {"reward": 1.0, "accuracy": 0.5, "length": 21.4}
    assert r1.detail == "step 3/5, reward 1.000, accuracy 0.50, response 21 tokens"
    assert view.stage("base").detail == "took 1m30s" and view.stage("data").detail == "took 10s"
    ev = view.stage("eval")
    assert ev.to_evaluate == ["base", "r1_zero"] and ev.evaluated == ["base"]
    assert ev.detail == "1/2 models evaluated"
    assert view.stage("report").detail == "after r1_zero, eval"
    assert "student_base" in view.not_in_run and "cold_start" in view.not_in_run
    assert view.elapsed_s == 190 and not view.finished and view.active is True


def test_estimate_of_the_time_left(run: Path) -> None:
    # r1_zero: 2 steps left x 20 s (median of the steps after the first: 20, 20) = 40 s; then its
    # eval, which took base 30 s: 70 s; the report counts as instant.
    assert view_of(run).left_s == pytest.approx(70.0)
    # time_step_s in the metrics wins over the version times: steps 50 (start-up), 10, 12 -> 11 s.
    rows = (run / "metrics" / "r1_zero.jsonl").read_text().splitlines()
    (run / "metrics" / "r1_zero.jsonl").unlink()
    for step, seconds in enumerate((50.0, 10.0, 12.0)):
        append_jsonl(run / "metrics" / "r1_zero.jsonl", {**_step_row(step, 1.0, 0.5, 20.0), "time_step_s": seconds})
    assert len(rows) == 3
    assert view_of(run).left_s == pytest.approx(2 * 11.0 + 30.0)
    # A clock behind the files' times (NFS skew) gives no negative time, elapsed or left.
    early = view_of(run, now=T0 - 500)
    assert early.elapsed_s == 0 and early.left_s is not None and early.left_s >= 0


def test_no_estimate_until_a_step_is_timed(tmp_path: Path, run: Path) -> None:
    for v in (1, 2, 3):  # back to v0000 only: r1_zero has no step yet and no other GRPO stage has one
        import shutil

        shutil.rmtree(run / "models" / "r1_zero" / f"v{v:04d}")
    (run / "metrics" / "r1_zero.jsonl").unlink()
    view = view_of(run)
    assert view.stage("r1_zero").state == RUNNING and view.stage("r1_zero").steps_done == 0
    assert view.left_s is None
    assert "time left: estimating" in render_view(view)[0]


def test_done_failed_queued_and_stopped(run: Path, tmp_path: Path) -> None:
    # A failed job makes its stage failed (and the run has no estimate); a pending one is queued.
    view = view_of(run, job_states={"103": ["FAILED"], "104": ["PENDING"]})
    assert view.stage("r1_zero").state == FAILED
    assert view.stage("r1_zero").detail.startswith("step 3/5, reward 1.000") and "job 103 (train) FAILED" in (
        view.stage("r1_zero").detail
    )
    assert view.left_s is None and "a job failed" in render_view(view)[0]
    # A rerun's newer record of the same job replaces the failed one.
    _job(run, "r1_zero", T0 + 185, "105")
    assert view_of(run, job_states={"103": ["FAILED"], "105": ["RUNNING"]}).stage("r1_zero").state == RUNNING
    # Nothing queued or running any more, and no `r1hpc run` holds the run: started stages stopped.
    done = {j: ["COMPLETED"] for j in ("101", "102", "103", "104", "105")}
    stopped = view_of(run, job_states=done)
    assert stopped.stage("r1_zero").state == STOPPED and stopped.active is False
    assert any("run the same `r1hpc run` command again" in line for line in render_view(stopped))
    # ... but not while `r1hpc run` is the one asking (live), nor when Slurm was not asked.
    assert view_of(run, job_states=done, live=True).stage("r1_zero").state == RUNNING
    assert view_of(run, job_states=None).stage("r1_zero").state == RUNNING
    # All five steps, both evals, then report.md: done, finished, no time left.
    _publish(run, "r1_zero", 4, T0 + 200, tmp_path)
    _publish(run, "r1_zero", 5, T0 + 220, tmp_path)
    assert view_of(run).stage("r1_zero").state == DONE
    assert view_of(run).stage("report").state == WAITING  # r1_zero's eval is still to come
    _eval_shard(run, "r1_zero", T0 + 250)
    atomic_write_text(run / "report.md", "# report\n")
    _at(run / "report.md", T0 + 240)  # older than the last eval: a report of an earlier pass
    assert view_of(run, now=T0 + 260).stage("report").state == WAITING
    _at(run / "report.md", T0 + 255)
    final = view_of(run, now=T0 + 300)
    assert final.finished and final.left_s == 0 and final.elapsed_s == 255  # until report.md
    assert final.stage("r1_zero").detail.endswith("took 1m50s")  # v0000 at +110 -> v0005 at +220
    assert render_view(final)[0].startswith("smoke: finished, 4m15s")


def test_each_eval_array_and_a_rerun_count(run: Path) -> None:
    # Eval submits one array per model: base's failed array is not hidden by r1_zero's newer one.
    _job(run, "eval", T0 + 100, "201", kind="eval", model_stage="base")
    _job(run, "eval", T0 + 110, "202", kind="eval", model_stage="r1_zero")
    view = view_of(run, job_states={**RUNNING_NOW, "201": ["FAILED"], "202": ["RUNNING"]})
    assert view.stage("eval").state == FAILED and "job 201 (eval) FAILED" in view.stage("eval").detail
    # A rerun that resubmitted a stage times it from the new job, not from the first attempt's.
    assert view_of(run).stage("data").detail == "took 10s"
    _job(run, "data", T0 + 4, "203")
    assert view_of(run).stage("data").detail == "took 6s"


def test_queued_on_slurm(run: Path) -> None:
    _job(run, "report", T0 + 100, "106", kind="eval")
    view = view_of(run, job_states={**RUNNING_NOW, "106": ["PENDING"]})
    assert view.stage("report").state == WAITING and "queued on Slurm (job 106)" in view.stage("report").detail


def test_log_lines_once_per_event(run: Path, tmp_path: Path) -> None:
    log = EventLog()
    first = log.update(view_of(run))
    # The first view says what is already done or running, one line per stage, not every past step.
    assert first == [
        "[3m10s] data: done earlier (took 10s)",
        "[3m10s] base: done earlier (took 1m30s)",
        "[3m10s] r1_zero: running (step 3/5, reward 1.000, accuracy 0.50, response 21 tokens)",
        "[3m10s] eval: running (1/2 models evaluated)",
    ]
    assert log.update(view_of(run)) == []  # nothing happened: nothing printed
    _publish(run, "r1_zero", 4, T0 + 200, tmp_path)
    append_jsonl(run / "metrics" / "r1_zero.jsonl", _step_row(3, 1.25, 0.625, 19.0))
    second = log.update(view_of(run, now=T0 + 205))
    assert second == [
        "[3m25s] r1_zero: step 4/5 done: reward 1.250, accuracy 0.62, response 19 tokens (under a minute left)"
    ]
    _publish(run, "r1_zero", 5, T0 + 220, tmp_path)
    append_jsonl(run / "metrics" / "r1_zero.jsonl", _step_row(4, 1.5, 0.75, 18.0))
    _eval_shard(run, "r1_zero", T0 + 240)
    third = log.update(view_of(run, now=T0 + 245))
    assert third[0].startswith("[4m05s] r1_zero: step 5/5 done: reward 1.500")
    assert third[1].startswith("[4m05s] r1_zero: done (step 5/5, reward 1.500, accuracy 0.75, response 18 tokens")
    assert "[4m05s] eval: r1_zero evaluated (2/2 models)" in third
    assert any(line.startswith("[4m05s] eval: done (2/2 models evaluated") for line in third)
    again = log.update(view_of(run, now=T0 + 250))
    lines = first + second + third + again
    assert len(lines) == len(set(lines)) and again == []
    # The report job starts and ends between two polls: both events, each once.
    _job(run, "report", T0 + 246, "107", kind="eval")
    atomic_write_text(run / "report.md", "# report\n")
    _at(run / "report.md", T0 + 250)
    end = log.update(view_of(run, now=T0 + 251))
    assert end == ["[4m10s] report: started", "[4m10s] report: done (took 4s)"]
    assert log.update(view_of(run, now=T0 + 300)) == []


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_block_is_redrawn_in_place(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    out = FakeTerminal()
    display = LiveDisplay(run, stages=STAGES, out=out, since=T0)
    assert display.mode == "live"
    display.poll()
    block = out.getvalue()
    lines = block.split("\n")[:-1]  # (splitlines would also split at the carriage return)
    assert lines[0].startswith("\r\x1b[Jsmoke: ") and "elapsed" in lines[0]
    assert any(line.startswith("  running  r1_zero") and "step 3/5" in line for line in lines)
    n = len(lines)
    display.poll()  # drawn again over the first: cursor up n lines, clear to the end of the screen
    assert out.getvalue()[len(block) :].startswith(f"\r\x1b[{n}A\x1b[J")
    mark = len(out.getvalue())
    display.message("r1hpc run: smoke: submitted data")
    after = out.getvalue()[mark:]
    assert (
        after.startswith(f"\r\x1b[{n}A\x1b[Jr1hpc run: smoke: submitted data\n")
        and after.count("running  r1_zero") == 1
    )
    # Without a terminal (a log): event lines, no escape codes.
    log = io.StringIO()
    display = LiveDisplay(run, stages=STAGES, out=log, since=T0)
    assert display.mode == "log"
    display.poll()
    display.poll()
    text = log.getvalue()
    assert "\x1b" not in text and text.count("r1_zero: running") == 1


def test_lines_fit_the_terminal(run: Path) -> None:
    lines = render_view(view_of(run), width=40)
    assert all(len(line) <= 40 for line in lines) and lines[0].endswith("~")


def test_results_table(run: Path) -> None:
    assert results_lines(run) == []  # nothing summarised yet
    _eval_summary(run, "base", 0.346, (0.294, 0.399))
    _eval_summary(run, "r1_zero", 0.449, (0.387, 0.511))
    assert results_lines(run) == [
        "held-out results (4 problems x k=2 samples): pass@1 [95% interval], cons@2, format rate",
        "  base     0.346 [0.294, 0.399]  cons 0.346  format 1.00",
        "  r1_zero  0.449 [0.387, 0.511]  cons 0.449  format 1.00  (+0.103 vs base)",
    ]


def test_run_prints_events_and_the_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`r1hpc run` without a terminal (pytest captures stdout): one line per event, then the end."""
    from r1hpc.pipeline import main

    args = [str(REPO / "configs" / "smoke.yaml"), f"runs_dir={tmp_path}", "--stages", "data"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert out.count("data: started") == 1 and out.count("data: done") == 1, out
    assert "r1hpc run: smoke: submitted data" in out and "r1hpc run: smoke finished in" in out
    assert main([*args, "--progress", "off"]) == 0
    quiet = capsys.readouterr().out
    assert "data:" not in quiet and "finished in" in quiet


def test_rl_all_step_shows_the_reward_model_on_general_prompts() -> None:
    from r1hpc.live import _grpo_detail, last_step_figures  # the phrase the view and the log print

    row = {"reward_mean": 1.4, "reward_accuracy_math": 0.3, "response_length_mean": 44.6, "reward_model_general": 0.614}
    assert last_step_figures(row) == {"reward": 1.4, "accuracy": 0.3, "length": 44.6, "rm_general": 0.614}
    view = StageView(
        name="rl_all", kind="grpo", state=RUNNING, steps_done=2, steps_planned=8, last=last_step_figures(row)
    )
    assert _grpo_detail(view) == (
        "step 2/8, reward 1.400, accuracy 0.30, response 45 tokens, reward model on general prompts 0.61"
    )
