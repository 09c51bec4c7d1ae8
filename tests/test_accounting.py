"""GPU-hour accounting on saved sacct dumps (tests/data/sacct/); figures worked out by hand.

mixed.txt, per row (GPU-seconds = GPUs x ElapsedRaw; prices default 2.0, long 1.5, h100 2.5 $/GPU-h):
    100    alice test/debug   2 GPU x 3600 s = 7200            exp1/grpo     11-20   $4.00
    200_0  alice test/debug   1 x 1800 = 1800 (array task)     exp1/rollout  11-20   $1.00
    200_1  alice test/debug   1 x 1800 = 1800 (array task)     exp1/rollout  11-20   $1.00
    300    bob research/long  4 x  600 = 2400 REQUEUED, wasted exp1/train    11-20   $1.00
    300    bob research/long  4 x 1200 = 4800                  exp1/train    11-20   $2.00
    310    carol research/long  1 x 900 = 900 PREEMPTED wasted -/-           11-20   $0.375
    311    carol research/debug 2 x 300 = 600 NODE_FAIL wasted -/-           11-20   $0.3333
    400    dave research/long h100 x8 x 7200 = 57600 RUNNING   exp2/sft (comment)
                23:00 on 11-21 -> 01:00 on 11-22: 28800 + 28800          8 x 2.5 x 2 h = $40.00
    500    alice test/long a100 x1 x 9000 = 9000 (no a100 price -> long 1.5)  -/-
                22:30 on 11-20 -> 01:00 on 11-21: 5400 + 3600                 $3.75
    600    bob test/debug  0 GPUs x 5000 s = 0
    700    erin PENDING = 0;  701 erin CANCELLED before start = 0
Total 86100 GPU-s, wasted 3900, cost $53.458333, wasted $1.708333, 11 distinct job ids.
"""

from __future__ import annotations

import csv
import json
from datetime import date, datetime
from pathlib import Path

import pytest

from r1hpc.accounting import build_parser, main
from r1hpc.accounting.prices import PriceError, Prices, load_prices
from r1hpc.accounting.report import build_report, group
from r1hpc.accounting.sacct import SacctError, parse_dump, read_dump, sacct_command
from r1hpc.accounting.timespec import TimeSpecError, parse_time
from r1hpc.accounting.usage import job_usage, split_days

DATA = Path(__file__).parent / "data" / "sacct"
MIXED = DATA / "mixed.txt"
PRICES = {"default": 2.0, "partitions": {"long": 1.5}, "gpu_types": {"h100": 2.5}}
HEADER = "JobID|JobIDRaw|JobName|User|Account|Partition|State|Submit|Start|End|ElapsedRaw|AllocTRES|NodeList|Comment"


def _prices(tmp_path: Path, text: str = json.dumps(PRICES)) -> Path:
    p = tmp_path / "prices.yaml"
    p.write_text(text)
    return p


def _run_json(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "report.json"
    assert main(["--sacct-file", str(MIXED), "--quiet", "--json", str(out), *args]) == 0
    return json.loads(out.read_text())


def _rows(report: dict, by: list[str]) -> dict[tuple[str, ...], dict]:
    table = next(t for t in report["tables"] if t["by"] == by)
    return {tuple(r[k] for k in by): r for r in table["rows"]}


def test_mixed_dump_totals_and_standard_tables(tmp_path: Path) -> None:
    rep = _run_json(tmp_path, "--prices", str(_prices(tmp_path)))
    t = rep["totals"]
    assert (t["gpu_seconds"], t["wasted_gpu_seconds"], t["jobs"]) == (86100, 3900, 11)
    assert t["cost"] == pytest.approx(53.458333, abs=1e-6)
    assert t["wasted_cost"] == pytest.approx(1.708333, abs=1e-6)
    by_user = {k[0]: (r["gpu_seconds"], r["wasted_gpu_seconds"], r["jobs"]) for k, r in _rows(rep, ["user"]).items()}
    assert by_user == {
        "alice": (19800, 0, 4),
        "bob": (7200, 2400, 2),
        "carol": (1500, 1500, 2),
        "dave": (57600, 0, 1),
        "erin": (0, 0, 2),
    }
    by_account = {k[0]: r["gpu_seconds"] for k, r in _rows(rep, ["account"]).items()}
    assert by_account == {"test": 19800, "research": 66300}
    by_stage = {k: (r["gpu_seconds"], r["wasted_gpu_seconds"]) for k, r in _rows(rep, ["run", "stage"]).items()}
    assert by_stage == {
        ("exp1", "grpo"): (7200, 0),
        ("exp1", "rollout"): (3600, 0),
        ("exp1", "train"): (7200, 2400),
        ("exp2", "sft"): (57600, 0),
        ("-", "-"): (10500, 1500),
        ("exp3", "grpo"): (0, 0),
    }
    by_day = {k[0]: (r["gpu_seconds"], r["jobs"]) for k, r in _rows(rep, ["day"]).items()}
    # 500 and 400 span midnight; 700/701 never ran and so are on no day; 600 ran with 0 GPUs.
    assert by_day == {"2026-11-20": (24900, 8), "2026-11-21": (32400, 2), "2026-11-22": (28800, 1)}


def test_per_job_records(tmp_path: Path) -> None:
    jobs = _run_json(tmp_path, "--price-per-gpu-hour", "1")["jobs"]
    assert len(jobs) == 12  # rows, not job ids: 300 has two attempts
    by = {(j["job_id"], j["state"]): j for j in jobs}
    assert by[("200_0", "COMPLETED")]["job_id_raw"] == "201"
    assert by[("300", "REQUEUED")]["wasted"] and not by[("300", "COMPLETED")]["wasted"]
    assert by[("300", "COMPLETED")]["restarts"] == 1
    run = by[("400", "RUNNING")]
    assert (run["gpus"], run["gpu_types"], run["gpu_seconds"]) == (8, {"h100": 8}, 57600)
    assert (run["run"], run["stage"], run["step"]) == ("exp2", "sft", "-")
    assert run["end"] == "2026-11-22T01:00:00"
    assert by[("600", "COMPLETED")]["gpu_seconds"] == 0 and by[("600", "COMPLETED")]["counted_s"] == 5000
    assert by[("701", "CANCELLED")]["counted_s"] == 0
    assert by[("500", "COMPLETED")]["cost"] == pytest.approx(2.5)  # flat $1 x 2.5 GPU-h
    assert by[("100", "COMPLETED")]["step"] == "3"


def test_group_by_any_keys(tmp_path: Path) -> None:
    rep = _run_json(tmp_path, "--by", "partition,state,gpu_type")
    assert len(rep["tables"]) == 1
    rows = {k: r["gpu_seconds"] for k, r in _rows(rep, ["partition", "state", "gpu_type"]).items()}
    assert rows == {
        ("debug", "COMPLETED", "-"): 10800,
        ("debug", "NODE_FAIL", "-"): 600,
        ("debug", "PENDING", "-"): 0,
        ("debug", "CANCELLED", "-"): 0,
        ("long", "REQUEUED", "-"): 2400,
        ("long", "COMPLETED", "-"): 4800,
        ("long", "PREEMPTED", "-"): 900,
        ("long", "RUNNING", "h100"): 57600,
        ("long", "COMPLETED", "a100"): 9000,
    }
    rep = _run_json(tmp_path, "--by", "user,day")
    rows = {k: r["gpu_seconds"] for k, r in _rows(rep, ["user", "day"]).items()}
    assert rows[("alice", "2026-11-20")] == 7200 + 3600 + 5400
    assert rows[("alice", "2026-11-21")] == 3600
    assert rows[("dave", "2026-11-21")] == rows[("dave", "2026-11-22")] == 28800


def test_filters_and_window(tmp_path: Path) -> None:
    rep = _run_json(tmp_path, "--run", "exp1")
    assert rep["totals"]["gpu_seconds"] == 7200 + 3600 + 7200
    rep = _run_json(tmp_path, "--user", "carol", "--account", "research")
    assert (rep["totals"]["gpu_seconds"], rep["totals"]["wasted_gpu_seconds"]) == (1500, 1500)
    # Only 00:00-12:00 on 11-21 counts: the last hour of job 500. Job 400 starts after the window.
    rep = _run_json(tmp_path, "--since", "2026-11-21", "--until", "2026-11-21T12:00")
    assert (rep["totals"]["gpu_seconds"], rep["totals"]["jobs"]) == (3600, 1)
    # Relative times resolve against the dump's queried_at (2026-11-22T01:00): 00:00-01:00 of job 400.
    rep = _run_json(tmp_path, "--since", "now-1hours")
    assert rep["query"]["since"] == "2026-11-22T00:00:00"
    assert rep["totals"]["gpu_seconds"] == 8 * 3600


def test_running_job_without_elapsed_counts_up_to_now(tmp_path: Path) -> None:
    dump = tmp_path / "running.txt"
    dump.write_text(
        "# r1hpc-sacct-dump queried_at=2026-11-22T00:30:00\n" + HEADER + "\n"
        "9|9|r1hpc:r:grpo:7|u|test|debug|RUNNING|2026-11-21T23:00:00|2026-11-21T23:00:00|"
        "Unknown||cpu=1,gres/gpu=3|n1|\n"
    )
    rows, queried_at = read_dump(dump)
    u = job_usage(rows[0], Prices(default=1.0), now=queried_at)
    assert (u.seconds, u.gpu_seconds) == (5400, 16200)
    assert u.days == ((date(2026, 11, 21), 3600), (date(2026, 11, 22), 1800))
    assert u.cost == pytest.approx(4.5)


def test_split_days_sums_to_interval() -> None:
    start, end = datetime(2026, 1, 30, 20, 0, 0), datetime(2026, 2, 2, 1, 0, 5)
    days = split_days(start, end)
    assert [d for d, _ in days] == [date(2026, 1, 30), date(2026, 1, 31), date(2026, 2, 1), date(2026, 2, 2)]
    assert [s for _, s in days] == [4 * 3600, 86400, 86400, 3605]
    assert sum(s for _, s in days) == (end - start).total_seconds()


def test_typed_and_untyped_gpus_priced_separately(tmp_path: Path) -> None:
    text = (
        HEADER + "\n1|1|x|u|a|long|COMPLETED|2026-01-01T00:00:00|2026-01-01T00:00:00|"
        "2026-01-01T01:00:00|3600|cpu=1,gres/gpu:h100=2,gres/gpu:a100=1,gres/gpu=4|n|\n"
    )
    u = job_usage(parse_dump(text, "t")[0], load_prices(_prices(tmp_path)))
    assert (u.gpus, u.gpu_types, u.gpu_type) == (4, {"h100": 2, "a100": 1}, "a100+h100")
    assert u.cost == pytest.approx(2 * 2.5 + 1 * 1.5 + 1 * 1.5)  # h100 typed; a100 and untyped by partition


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "1|1|x|u|a|p|COMPLETED|2026-01-01T00:00:00|2026-01-01T00:00:00|2026-01-01T00:00:01|1|gres/gpu=1",
            "expected 14 '|'-separated fields",
        ),
        (
            "1|1|x|u|a|p|COMPLETED|2026-01-01T00:00:00|yesterday|2026-01-01T00:00:01|1|gres/gpu=1|n|",
            "column Start = 'yesterday' is not a time",
        ),
        (
            "1|1|x|u|a|p|FINISHED|2026-01-01T00:00:00|2026-01-01T00:00:00|2026-01-01T00:00:01|1|gres/gpu=1|n|",
            "is not a Slurm job state",
        ),
        (
            "1|1|x|u|a|p|COMPLETED|2026-01-01T00:00:00|2026-01-01T00:00:00|2026-01-01T00:00:01|1.5|gres/gpu=1|n|",
            "column ElapsedRaw = '1.5' is not a whole number",
        ),
        (
            "1.batch|1.batch|batch|u|a|p|COMPLETED|2026-01-01T00:00:00|2026-01-01T00:00:00|2026-01-01T00:00:01|1|"
            "gres/gpu=1|n|",
            "job step '1.batch' found",
        ),
        (
            "JobID|x|y|z|a|p|COMPLETED|2026-01-01T00:00:00|2026-01-01T00:00:00|2026-01-01T00:00:01|1|gres/gpu=1|n|",
            "column JobID = 'JobID' is not a job id",
        ),
    ],
)
def test_malformed_line_names_file_and_line(
    tmp_path: Path, line: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = tmp_path / "bad.txt"
    good = MIXED.read_text().splitlines()[3]
    dump.write_text(f"# comment\n{HEADER}\n{good.replace('|0|gpu01', '|gpu01')}\n{line}\n")
    with pytest.raises(SacctError, match=rf"bad\.txt:4: .*{message}"):
        read_dump(dump)
    assert main(["--sacct-file", str(dump)]) == 1
    assert f"{dump}:4:" in capsys.readouterr().err


def test_bad_gpu_tres_and_header(tmp_path: Path) -> None:
    bad = HEADER + "\n1|1|x|u|a|p|COMPLETED|||2026-01-01T00:00:01|1|cpu=1,gres/gpu=two|n|\n"
    with pytest.raises(SacctError, match=r"t:2: AllocTRES gres/gpu='two'"):
        job_usage(parse_dump(bad, "t")[0], None)
    with pytest.raises(SacctError, match=r"t:1: .*missing ElapsedRaw, AllocTRES"):
        parse_dump("JobID|JobName|User|Account|Partition|State|Start\n", "t")
    with pytest.raises(SacctError, match="empty"):
        parse_dump("# nothing\n", "t")
    with pytest.raises(SacctError, match="cannot read sacct dump"):
        read_dump(tmp_path / "missing.txt")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{default: 2.0, gpu_type: {h100: 3}}", "unknown key 'gpu_type'"),
        ("{partitions: {long: -1}}", r"partitions\.long = -1: expected a number >= 0"),
        ("{gpu_types: [h100]}", "gpu_types: expected a mapping"),
        ("[1, 2]", "expected a mapping with keys"),
        ("{default: [}", "not valid YAML"),
    ],
)
def test_price_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = _prices(tmp_path, text)
    with pytest.raises(PriceError, match=message) as err:
        load_prices(path)
    assert str(path) in str(err.value)


def test_missing_price_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prices = _prices(tmp_path, "{partitions: {long: 1.5}}")
    assert main(["--sacct-file", str(MIXED), "--prices", str(prices), "--quiet"]) == 2
    assert "no price for partition 'debug'" in capsys.readouterr().err
    # --price-per-gpu-hour fills in the missing default.
    rep = _run_json(tmp_path, "--prices", str(prices), "--price-per-gpu-hour", "0")
    assert rep["totals"]["cost"] == pytest.approx((2400 + 4800 + 900 + 57600 + 9000) / 3600 * 1.5)


def test_text_csv_and_plot_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_csv, png = tmp_path / "t.csv", tmp_path / "t.png"
    assert (
        main(["--sacct-file", str(MIXED), "--csv", str(out_csv), "--plot", str(png), "--price-per-gpu-hour", "2"]) == 0
    )
    text = capsys.readouterr().out
    for title in ("GPU usage by user", "GPU usage by account", "GPU usage by run, stage", "GPU usage by day"):
        assert title in text
    assert "Total: 23.917 GPU-hours in 11 jobs, of which 1.083 wasted" in text
    lines = text.splitlines()
    dave = next(line for line in lines if line.startswith("dave"))
    assert dave.split() == ["dave", "1", "16.000", "0.000", "32.00", "0.00"]
    rows = list(csv.DictReader(out_csv.open()))
    assert rows[-1]["table"] == "total" and float(rows[-1]["gpu_hours"]) == pytest.approx(86100 / 3600)
    day_rows = [r for r in rows if r["table"] == "day"]
    assert [(r["day"], int(r["gpu_seconds"])) for r in day_rows] == [
        ("2026-11-20", 24900),
        ("2026-11-21", 32400),
        ("2026-11-22", 28800),
    ]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_cli_argument_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sacct-file", str(MIXED), "--by", "user,colour"]) == 2
    assert "unknown key 'colour'" in capsys.readouterr().err
    assert main(["--sacct-file", str(MIXED), "--since", "last tuesday"]) == 2
    assert "--since 'last tuesday' is not a time" in capsys.readouterr().err
    assert main(["--sacct-file", str(MIXED), "--since", "2026-11-22", "--until", "2026-11-21"]) == 2
    assert "is before --since" in capsys.readouterr().err
    assert main(["--sacct-file", str(MIXED), "--save-sacct", str(tmp_path / "x")]) == 2
    assert main(["--sacct-file", str(MIXED), "--price-per-gpu-hour", "nan"]) == 2
    assert "--price-per-gpu-hour = nan: expected a number >= 0" in capsys.readouterr().err
    assert build_parser().prog == "gpu-hours"


def test_time_specs_and_sacct_command() -> None:
    now = datetime(2026, 11, 22, 10, 30, 15)
    assert parse_time("now-7days", now) == datetime(2026, 11, 15, 10, 30, 15)
    assert parse_time("now-90minutes", now) == datetime(2026, 11, 22, 9, 0, 15)
    assert parse_time("today", now) == datetime(2026, 11, 22)
    assert parse_time("2026-11-01T08:00", now) == datetime(2026, 11, 1, 8)
    with pytest.raises(TimeSpecError, match="unknown unit 'fortnights'"):
        parse_time("now-2fortnights", now)
    with pytest.raises(TimeSpecError, match="without a UTC offset"):
        parse_time("2026-11-01T08:00+02:00", now)
    cmd = sacct_command(datetime(2026, 11, 15), now, account="research")
    assert cmd[:4] == ["sacct", "-P", "-D", "-X"] and cmd[4].startswith("--format=JobID,JobIDRaw,")
    assert cmd[5:] == ["-S", "2026-11-15T00:00:00", "-E", "2026-11-22T10:30:15", "--allusers", "-A", "research"]
    assert sacct_command(now, now, user="bob")[-2:] == ["-u", "bob"]


def test_group_order_and_report_shape() -> None:
    rows, _ = read_dump(MIXED)
    usages = [job_usage(r, None) for r in rows]
    assert [g.keys["user"] for g in group(usages, ["user"])] == ["alice", "bob", "carol", "dave", "erin"]
    rep = build_report(usages, [("state",)], {"source": "t"})
    assert "cost" not in rep["totals"]
    assert sum(r["gpu_seconds"] for r in rep["tables"][0]["rows"]) == rep["totals"]["gpu_seconds"] == 86100


def test_malformed_r1hpc_name_is_counted_unattributed_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = tmp_path / "names.txt"
    dump.write_text(
        HEADER + "\n"
        "5|5|r1hpc:onlyrun|u|test|debug|COMPLETED|||2026-01-01T00:00:10|10|gres/gpu=1|n|\n"
        "6|6|plain|u|test|debug|COMPLETED|2026-01-01T00:00:00|2026-01-01T00:00:00|"
        "2026-01-01T00:00:10|10|gres/gpu=2|n|x r1hpc run=r9 stage=sft step=12 y\n"
    )
    out = tmp_path / "n.json"
    assert main(["--sacct-file", str(dump), "--json", str(out), "--quiet"]) == 0
    assert "job 5 name 'r1hpc:onlyrun' does not follow" in capsys.readouterr().err
    jobs = {j["job_id"]: (j["run"], j["stage"], j["step"]) for j in json.loads(out.read_text())["jobs"]}
    assert jobs == {"5": ("-", "-", "-"), "6": ("r9", "sft", "12")}


# ---------------------------------------------------------------- busy / waiting (--run-dir)
#
# A run directory written here, and its sacct rows. Per stage and kind (GPU-seconds):
#   r1_zero train 900, long-lived, 2 GPUs x 1000 s = 2000; stage idle share of the train job,
#       weighted by time_step_s: (0.5 x 100 + 0.1 x 300) / 400 = 0.2 -> busy 1600, waiting 400
#   r1_zero rollout 901_0, 901_1, long-lived, 1 x 1000 each = 2000; rollout idle share
#       (0.2 x 100 + 0.6 x 300) / 400 = 0.5 -> busy 1000, waiting 1000
#       (step 1 was logged twice: its first line, idle 0.9 / 0.95, does not count)
#   sft train 902, 4 x 500 = 2000: not split
#   distill_rl (grpo.jobs=step): step 0 = 80 s, train idle 0.75 (busy 20 s), rollout idle 0.5
#       (busy 40 s); step 1 = 40 s, train idle 0.25 (busy 30 s); step 5 has no timing
#     train 910 step 0, 1 x 100 s: busy 20, waiting 80
#     train 912 step 1: REQUEUED attempt 1 x 30 s -> all waiting 30; then 1 x 50 s: busy 30, waiting 20
#     rollout 911_0 step 0, 1 x 60 s: busy 40, waiting 20;  rollout 913 step 5, 1 x 10 s: not split
#   950 (local executor) and 999 (another run) are not counted.
# Total 6250 GPU-s: busy 2690, waiting 1550, not split 2010.

RUN_JOBS = [  # job id, stage, step, kind, executor, tasks
    ("900", "r1_zero", None, "train", "slurm", ["900"]),
    ("901", "r1_zero", None, "rollout", "slurm", ["901_0", "901_1"]),
    ("902", "sft", None, "train", "slurm", ["902"]),
    ("910", "distill_rl", 0, "train", "slurm", ["910"]),
    ("911", "distill_rl", 0, "rollout", "slurm", ["911_0"]),
    ("912", "distill_rl", 1, "train", "slurm", ["912"]),
    ("913", "distill_rl", 5, "rollout", "slurm", ["913_0"]),
    ("950", "distill_rl", 2, "train", "local", ["950"]),
]
RUN_SACCT = [  # JobID, state, GPUs, seconds
    ("900", "COMPLETED", 2, 1000),
    ("901_0", "COMPLETED", 1, 1000),
    ("901_1", "COMPLETED", 1, 1000),
    ("902", "COMPLETED", 4, 500),
    ("910", "COMPLETED", 1, 100),
    ("911_0", "COMPLETED", 1, 60),
    ("912", "REQUEUED", 1, 30),
    ("912", "COMPLETED", 1, 50),
    ("913_0", "COMPLETED", 1, 10),
    ("999", "COMPLETED", 8, 1000),
]


def _step(step: int, step_s: float, idle_train: float, idle_rollout: float | None = None) -> dict:
    rec = {"step": step, "reward_mean": 0.1, "time_step_s": step_s, "idle_train_frac": idle_train}
    if idle_rollout is not None:
        rec["idle_rollout_frac"] = idle_rollout
    return rec


def _busy_run(tmp_path: Path) -> tuple[Path, Path]:
    """(run dir, sacct dump) as in the table above."""
    from r1hpc.fsio import append_jsonl

    run = tmp_path / "exp9"
    for job_id, stage, step, kind, executor, tasks in RUN_JOBS:
        append_jsonl(
            run / "jobs.jsonl",
            {
                "time": f"2026-11-20T{int(job_id) % 100 // 10 + 10:02d}:00:00+00:00",
                "stage": stage,
                "step": step,
                "kind": kind,
                "executor": executor,
                "name": f"r1hpc:exp9:{stage}:{'-' if step is None else step}",
                "job_id": job_id,
                "task_ids": tasks,
                "array_size": len(tasks) if "_" in tasks[0] else 0,
            },
        )
    for rec in (_step(0, 100.0, 0.5, 0.2), _step(1, 300.0, 0.9, 0.95), _step(1, 300.0, 0.1, 0.6)):
        append_jsonl(run / "metrics" / "r1_zero.jsonl", rec)
    for rec in (_step(0, 80.0, 0.75, 0.5), _step(1, 40.0, 0.25), {"step": 5, "reward_mean": 0.2}):
        append_jsonl(run / "metrics" / "distill_rl.jsonl", rec)
    append_jsonl(run / "metrics" / "sft.jsonl", {"step": 0, "loss": 1.0})
    lines = [HEADER]
    for job_id, state, gpus, secs in RUN_SACCT:
        job = next((j for j in RUN_JOBS if j[0] == job_id.split("_")[0]), None)
        name = f"r1hpc:exp9:{job[1]}:{'-' if job[2] is None else job[2]}" if job else "r1hpc:other:sft:-"
        lines.append(
            f"{job_id}|{job_id}|{name}|alice|test|gpu|{state}|2026-11-20T10:00:00|2026-11-20T12:00:00|"
            f"2026-11-20T13:00:00|{secs}|cpu=1,gres/gpu={gpus}|gpu01|"
        )
    dump = tmp_path / "run.txt"
    dump.write_text("\n".join(lines) + "\n")
    return run, dump


def test_run_dir_splits_gpu_hours_into_busy_and_waiting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, dump = _busy_run(tmp_path)
    out = tmp_path / "busy.json"
    assert main(["--sacct-file", str(dump), "--run-dir", str(run), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    rep = json.loads(out.read_text())
    assert rep["totals"]["gpu_seconds"] == 6250  # only the run's Slurm jobs: not 999, not the local 950
    assert rep["query"]["run_dir"] == str(run)
    busy = rep["busy"]
    rows = {(r["stage"], r["kind"]): r for r in busy["rows"]}
    got = {
        k: tuple(
            round(r[c] * 3600, 6) for c in ("gpu_hours", "busy_gpu_hours", "waiting_gpu_hours", "not_split_gpu_hours")
        )
        for k, r in rows.items()
    }
    assert got == {
        ("distill_rl", "rollout"): (70, 40, 20, 10),
        ("distill_rl", "train"): (180, 50, 130, 0),
        ("r1_zero", "rollout"): (2000, 1000, 1000, 0),
        ("r1_zero", "train"): (2000, 1600, 400, 0),
        ("sft", "train"): (2000, 0, 0, 2000),
    }
    assert rows[("r1_zero", "train")]["waiting_share"] == pytest.approx(0.2)
    assert rows[("sft", "train")]["waiting_share"] is None and rows[("sft", "train")]["split_by"] == []
    # jobs and array tasks, as in the other tables
    assert rows[("r1_zero", "rollout")]["jobs"] == 2 and rows[("distill_rl", "train")]["jobs"] == 2
    t = busy["totals"]
    assert (round(t["busy_gpu_hours"] * 3600), round(t["waiting_gpu_hours"] * 3600)) == (2690, 1550)
    assert round(t["not_split_gpu_hours"] * 3600) == 2010 and t["jobs"] == rep["totals"]["jobs"] == 8
    assert busy["jobs_not_in_sacct"] == []
    # the text table
    table = text.split("Busy and waiting GPU-hours of run ")[1].splitlines()
    line = next(x for x in table if x.startswith("r1_zero") and " train " in x)
    assert line.split()[:7] == ["r1_zero", "train", "1", "0.556", "0.444", "0.111", "20%"]
    sft = next(x for x in table if x.startswith("sft"))
    assert sft.split()[:7] == ["sft", "train", "1", "0.556", "-", "-", "-"] and "not split (no step timing)" in sft
    total = next(x for x in table if x.startswith("TOTAL"))
    assert total.split() == ["TOTAL", "8", "1.736", "0.747", "0.431", "37%", "0.558"]
    assert any(x.startswith("How: a long-lived GRPO") for x in table)


def test_run_dir_live_sacct_window_starts_at_the_first_submission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    import r1hpc.accounting.cli as cli

    run, dump = _busy_run(tmp_path)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        asked: list[list[str]] = []
        text = dump.read_text()
        monkeypatch.setattr(cli, "run_sacct", lambda cmd: asked.append(cmd) or text)
        assert main(["--run-dir", str(run), "--quiet"]) == 0
        # first submission 10:00 UTC (job 900), an hour of margin before it
        assert asked[0][asked[0].index("-S") + 1] == "2026-11-20T09:00:00"
        assert main(["--run-dir", str(run), "--quiet", "--since", "2026-11-19"]) == 0
        assert asked[1][asked[1].index("-S") + 1] == "2026-11-19T00:00:00"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    capsys.readouterr()
    # a job of the run that sacct does not list is named
    out = tmp_path / "b.json"
    lines = [x for x in dump.read_text().splitlines() if not x.startswith("902|")]
    dump.write_text("\n".join(lines) + "\n")
    assert main(["--sacct-file", str(dump), "--run-dir", str(run), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["busy"]["jobs_not_in_sacct"] == ["902"]
    assert "1 of the run's Slurm jobs not in the sacct rows read (outside the window?): 902" in capsys.readouterr().out


def test_run_dir_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from r1hpc.fsio import append_jsonl

    assert main(["--sacct-file", str(MIXED), "--run-dir", str(tmp_path / "nope")]) == 2
    assert "no jobs.jsonl" in capsys.readouterr().err
    local = tmp_path / "local"
    append_jsonl(
        local / "jobs.jsonl", {"stage": "sft", "step": None, "kind": "train", "executor": "local", "job_id": "1"}
    )
    assert main(["--sacct-file", str(MIXED), "--run-dir", str(local)]) == 2
    assert "no Slurm jobs" in capsys.readouterr().err
    assert "idle_rollout_frac" in build_parser().format_help()  # the split rule is in the help text
