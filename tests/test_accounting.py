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
