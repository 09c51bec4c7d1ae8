"""The whole R1 recipe end to end on the local executor (configs/smoke.yaml): every stage's job
runs for real as a subprocess and hands over through the run directory."""

import json
import shutil

from r1hpc.completion import eval_complete
from r1hpc.config import read_run_config
from r1hpc.pipeline import MODEL_STAGES, main
from r1hpc.stages.common import read_metrics
from r1hpc.store import RunDir, latest_model

REPO_CONFIG = "configs/smoke.yaml"


def test_every_stage_publishes_and_the_report_has_every_model(smoke_run_local):
    run = RunDir(smoke_run_local)
    for stage in MODEL_STAGES:
        version = latest_model(run, stage, verify="sha256")
        assert (version.path / "config.json").exists(), stage
    assert latest_model(run, "reward_model").path.exists()
    # GRPO stages: one published version per step after v0000, one metrics line per step.
    assert latest_model(run, "r1_zero").version == 2
    assert [m["step"] for m in read_metrics(smoke_run_local, "r1_zero")] == [0, 1]
    for stage in ("base", "r1_zero", "distill", "distill_rl"):
        summary = json.loads((smoke_run_local / "eval" / f"{stage}.json").read_text())
        assert 0.0 <= summary["pass_at_1"] <= 1.0
    report = (smoke_run_local / "report.md").read_text()
    for stage in MODEL_STAGES:
        assert stage in report
    assert (smoke_run_local / "plots").is_dir() and any((smoke_run_local / "plots").glob("*.png"))
    stats = json.loads((smoke_run_local / "data" / "rejection_stats.json").read_text())
    assert stats["sampled"] >= stats["kept"]


def test_rerun_of_a_finished_run_changes_nothing(smoke_run_local, capsys):
    run = RunDir(smoke_run_local)
    before = {s: latest_model(run, s).manifest for s in MODEL_STAGES}
    assert main([REPO_CONFIG, f"runs_dir={smoke_run_local.parent}", "--stages", "r1_zero,sft"]) == 0
    after = {s: latest_model(run, s).manifest for s in MODEL_STAGES}
    assert before == after


def test_local_branches_run_side_by_side(smoke_run_local):
    """The local executor has no scheduler; the pipeline still runs independent branches at once:
    the student's RL starts while the teacher's chain is in R1-Zero, not after rl_all."""
    jobs = [json.loads(line) for line in (smoke_run_local / "jobs.jsonl").read_text().splitlines()]
    first = {}
    for i, rec in enumerate(jobs):
        first.setdefault(rec["stage"], i)
    assert first["distill_rl"] < first["cold_start"], [(r["stage"], r["step"]) for r in jobs]


def test_a_rerun_submits_only_what_is_left(smoke_run_local, tmp_path):
    """A rerun submits no job for a complete stage (on a busy cluster each would wait in the queue
    only to find its outputs): on a finished run only the report; with rl_all's last version and
    its eval gone, rl_all (which republishes the same version), its eval and the report."""
    runs = tmp_path / "runs"
    shutil.copytree(smoke_run_local, runs / "smoke")
    (runs / "smoke" / "config.yaml").unlink()  # it names the original's runs_dir
    jobs = runs / "smoke" / "jobs.jsonl"

    def new_jobs(args: list[str]) -> list[tuple[str, str | None]]:
        before = len(jobs.read_text().splitlines())
        assert main([REPO_CONFIG, f"runs_dir={runs}", *args]) == 0
        return [(r["stage"], r.get("model_stage")) for r in map(json.loads, jobs.read_text().splitlines()[before:])]

    assert new_jobs([]) == [("report", None)]
    run = RunDir(runs / "smoke")
    last = latest_model(run, "rl_all")
    assert last.version == 1
    shutil.rmtree(last.path)
    shutil.rmtree(run.root / "rollouts" / "eval-rl_all")
    assert sorted(set(new_jobs(["--stages", "rl_all,eval,report"]))) == [
        ("eval", "rl_all"),
        ("report", None),
        ("rl_all", None),
    ]
    assert latest_model(run, "rl_all").manifest["files"] == last.manifest["files"]
    # Without the report (which waits on every eval) the run still returns only once its evals are
    # done, and their summaries (the results table's rows) are written by the eval tasks.
    shutil.rmtree(run.root / "rollouts" / "eval-sft")
    (run.root / "eval" / "sft.json").unlink()
    assert new_jobs(["--stages", "eval"]) == [("eval", "sft")]
    assert eval_complete(read_run_config(run.root), run, "sft")
    assert json.loads((run.root / "eval" / "sft.json").read_text())["stage"] == "sft"


def test_what_makes_a_stage_complete(smoke_run_local, tmp_path):
    """Complete = the jobs' own skip conditions: the last version, a metrics line per GRPO step,
    the done marker; eval per model with its general prompts; the report never."""
    from r1hpc import recipe
    from r1hpc.completion import stage_complete

    shutil.copytree(smoke_run_local, tmp_path / "smoke")
    run, cfg = RunDir(tmp_path / "smoke"), read_run_config(tmp_path / "smoke")
    assert [e.name for e in recipe.STAGES if not stage_complete(cfg, run, e)] == ["eval", "report"]
    assert all(eval_complete(cfg, run, m) for m in MODEL_STAGES)
    # A train job killed between publishing its last version and logging that step's metrics.
    metrics = run.metrics_path("r1_zero")
    metrics.write_text("".join(line for line in metrics.read_text().splitlines(True) if '"step":1,' not in line))
    (run.root / "done" / "cold_start" / "probe.json").unlink()  # the probe after the cold-start SFT
    shutil.rmtree(run.root / "rollouts" / "eval_general-sft")
    assert not stage_complete(cfg, run, recipe.stage("r1_zero"))
    assert not stage_complete(cfg, run, recipe.stage("cold_start"))
    assert not eval_complete(cfg, run, "sft") and eval_complete(cfg, run, "rl_all")


def test_second_submitter_of_a_run_is_refused(tmp_path, capsys):
    """While one `r1hpc run` of a run submits or waits, a second one is refused, naming it."""
    from r1hpc.lease import Lease

    args = [REPO_CONFIG, f"runs_dir={tmp_path}", "--stages", "data"]
    assert main(args) == 0  # writes the run's config; the lease is released at exit
    other = Lease(RunDir(tmp_path / "smoke").lease_path("run", "submitter"), owner="r1hpc run smoke").acquire()
    try:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "another `r1hpc run` of" in err and "held by 'r1hpc run smoke'" in err
    finally:
        other.release()
    assert main(args) == 0
