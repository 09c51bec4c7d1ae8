"""The user's problem files (`data.train`, `data.heldout`) as the run's problem records.

A source is a .jsonl / .json / .parquet file or a directory written by datasets' `save_to_disk`.
Its columns are named in the config (a dotted path reaches into a nested column:
`reward_model.ground_truth`) or by a preset (verl, openr1, gsm8k, math). Each row becomes:

    id              str   "<data_source>-<12 hex of sha256(prompt)>"
    prompt          str   the question (for chat messages: the last user message's content)
    answer          str   normalised reference answer (answer_format: last \\boxed{}, GSM8K's "####", raw)
    difficulty      int   0 (unknown)
    kind            str   "math", or "code" when the row has tests
    solution_steps  list[str]  [], or the worked solution as one step when the answer column held one
    data_source     str   the row's data_source column, else the source's name, else the file's stem
    messages, choices, language, tests   only when the row has them

Exact duplicate rows within one file are dropped (counted); `samples` / `weight` then pick the
rows (seeded by the run seed and the source's index). Held-out problems whose normalised prompt
equals a train prompt, or that share a word n-gram of `data.decontam_ngram` words with one, are
dropped. Every bad input raises ValueError with one line naming the file (and row) or config key.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from pathlib import Path
from typing import Any

from r1hpc.config import Config, DataSource

__all__ = ["PRESETS", "load_problems", "source_problems", "normalise_answer", "normalise_prompt"]

# Column layouts of peers' datasets; a column set in the source overrides the preset's.
PRESETS: dict[str, dict[str, str]] = {
    "verl": {"prompt": "prompt", "answer": "reward_model.ground_truth", "data_source": "data_source"},
    "openr1": {"prompt": "problem", "answer": "solution"},
    "gsm8k": {"prompt": "question", "answer": "answer"},
    "math": {"prompt": "problem", "answer": "solution"},
}
# answer_format "auto" under these presets means the preset's format.
_PRESET_FORMAT = {"gsm8k": "gsm8k", "math": "boxed"}
_COLUMN_FIELDS = ("prompt", "answer", "choices", "language", "tests", "data_source")
_MISSING = object()
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_WORD = re.compile(r"\w+")


# ---------------------------------------------------------------- answers and prompts (pure)


def _last_boxed(text: str) -> tuple[str | None, int, int]:
    """(content, start, end) of the last \\boxed{...} / \\fbox{...}; content None when absent or unbalanced."""
    starts = list(_BOXED.finditer(text))
    if not starts:
        return None, -1, -1
    m = starts[-1]
    depth, i = 1, m.end()
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[m.end() : i], m.start(), i + 1
        i += 1
    return None, m.start(), -1


def normalise_answer(value: Any, answer_format: str) -> tuple[str, list[str]]:
    """(answer, solution_steps) of an answer cell; ValueError (without file/row) when it does not parse."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected a string or number, got {value!r}")
    if isinstance(value, int):
        return str(value), []
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value!r}")
        return (str(int(value)) if value.is_integer() else repr(value)), []
    if not isinstance(value, str):
        raise ValueError(f"expected a string or number, got {type(value).__name__} {value!r:.80}")
    fmt = answer_format
    if fmt == "auto":
        fmt = "boxed" if _BOXED.search(value) else "gsm8k" if "####" in value else "raw"
    if fmt == "boxed":
        content, start, end = _last_boxed(value)
        if content is None or not content.strip():
            raise ValueError("has no complete \\boxed{...} (answer_format boxed)")
        rest = (value[:start] + value[end:]).strip()
        return content.strip(), [value.strip()] if rest else []
    if fmt == "gsm8k":
        if "####" not in value:
            raise ValueError("has no '#### <answer>' line (answer_format gsm8k)")
        before, _, after = value.rpartition("####")
        answer = _THOUSANDS.sub("", after.strip())
        if not answer:
            raise ValueError("has nothing after its last '####' (answer_format gsm8k)")
        return answer, [before.strip()] if before.strip() else []
    if fmt == "raw":
        if not value.strip():
            raise ValueError("is empty (answer_format raw)")
        return value.strip(), []
    raise ValueError(f"unknown answer_format {answer_format!r}; expected auto, boxed, gsm8k or raw")


def _prompt(value: Any) -> tuple[str, list[dict[str, str]] | None]:
    """(question text, chat messages or None) of a prompt cell; ValueError when it is neither."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("is empty")
        return value.strip(), None
    if isinstance(value, list):
        if not value:
            raise ValueError("is an empty message list")
        messages = []
        for j, m in enumerate(value):
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise ValueError(f"message {j} should be a dict with str 'role' and 'content', got {m!r:.120}")
            messages.append({"role": m["role"], "content": m["content"]})
        users = [m["content"] for m in messages if m["role"] == "user"]
        if not users or not users[-1].strip():
            raise ValueError("has no user message with content")
        return users[-1].strip(), messages
    raise ValueError(f"should be a string or a list of chat messages, got {type(value).__name__} {value!r:.80}")


def _tests(value: Any) -> list[dict[str, str]] | None:
    """A row's tests as [{"input", "output"}], None when the cell is empty; ValueError on a bad shape."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"is a string but not a JSON list of tests ({e.msg})") from None
    if not isinstance(value, list) or not value:
        raise ValueError(f"should be a list of {{'input': str, 'output': str}}, got {type(value).__name__}")
    out = []
    for j, t in enumerate(value):
        if not (isinstance(t, dict) and isinstance(t.get("input"), str) and isinstance(t.get("output"), str)):
            raise ValueError(f"test {j} should be a dict with str 'input' and 'output', got {t!r:.120}")
        out.append({"input": t["input"], "output": t["output"]})
    return out


def normalise_prompt(prompt: str) -> str:
    """Lowercased, whitespace collapsed: the form decontamination compares."""
    return " ".join(prompt.lower().split())


# ---------------------------------------------------------------- reading files


def _get(row: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(row, dict) or part not in row:
            return _MISSING
        row = row[part]
    return row


def _column_names(rows: list[dict[str, Any]]) -> list[str]:
    """Top-level columns and the dotted paths of nested ones, over the first rows."""
    names: dict[str, None] = {}

    def walk(obj: dict[str, Any], prefix: str, depth: int) -> None:
        for k, v in obj.items():
            names[prefix + str(k)] = None
            if isinstance(v, dict) and depth < 3:
                walk(v, f"{prefix}{k}.", depth + 1)

    for row in rows[:100]:
        walk(row, "", 1)
    return list(names)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not a JSON line ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected one JSON object per line, got {type(obj).__name__}")
            rows.append(obj)
    return rows


def _read_json(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if text.lstrip().startswith("{"):  # JSON lines under a .json name (datasets' to_json writes these)
            return _read_jsonl(path)
        raise ValueError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    for i, obj in enumerate(data, 1):
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: row {i}: expected a JSON object, got {type(obj).__name__}")
    return data


def _read_saved(path: Path, split: str, key: str, default_split: str) -> list[dict[str, Any]]:
    import datasets

    if not ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        raise ValueError(
            f"{path}: a directory, but not one written by datasets' save_to_disk "
            f"(no dataset_dict.json or state.json) ({key}.path)"
        )
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001 - any failure to read is the user's file's
        raise ValueError(f"{path}: datasets.load_from_disk failed: {type(e).__name__}: {e}") from None
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        if split:
            if split not in loaded:
                raise ValueError(f"{path}: no split {split!r} ({key}.split); splits: {', '.join(names)}")
        elif len(names) == 1:
            split = names[0]
        elif default_split in loaded:
            split = default_split
        else:
            raise ValueError(f"{path}: holds splits {', '.join(names)}; set {key}.split to one of them")
        loaded = loaded[split]
    return loaded.to_list()


def _read_rows(path: Path, split: str, key: str, default_split: str) -> list[dict[str, Any]]:
    """The file's rows as dicts (nested columns as nested dicts)."""
    if not path.exists():
        raise ValueError(f"{path}: no such file or directory ({key}.path)")
    try:
        if path.is_dir():
            rows = _read_saved(path, split, key, default_split)
        elif path.suffix == ".jsonl":
            rows = _read_jsonl(path)
        elif path.suffix == ".json":
            rows = _read_json(path)
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        else:
            raise ValueError(
                f"{path}: unknown file type {path.suffix!r} ({key}.path); expected .jsonl, .json, "
                ".parquet or a directory written by datasets' save_to_disk"
            )
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow / OS errors on a user's file
        raise ValueError(f"{path}: could not be read: {type(e).__name__}: {e}") from None
    if not rows:
        raise ValueError(f"{path}: empty (0 rows) ({key}.path)")
    return rows


# ---------------------------------------------------------------- one source


def _columns(src: DataSource, key: str) -> dict[str, str]:
    """Config field -> column path, the source's own over its preset's; ValueError naming the missing key."""
    preset = PRESETS.get(src.preset, {})
    cols = {f: getattr(src, f) or preset.get(f, "") for f in _COLUMN_FIELDS}
    hint = f"set it, or {key}.preset to one of {', '.join(PRESETS)}"
    if not cols["prompt"]:
        raise ValueError(f"{key}.prompt: no prompt column given for {src.path} ({hint})")
    if not cols["answer"] and not cols["tests"]:
        raise ValueError(
            f"{key}.answer: no answer column given for {src.path} ({hint}; code problems may give {key}.tests instead)"
        )
    return cols


def _record(row: dict[str, Any], cols: dict[str, str], fmt: str, default_source: str) -> dict[str, Any]:
    """One row as a problem record; ValueError "<field> column '<col>' ..." when a cell does not fit."""

    def cell(field: str) -> Any:
        value = _get(row, cols[field]) if cols[field] else None
        return None if value is _MISSING else value

    value = cell("prompt")
    if value is None:
        raise ValueError(f"prompt column {cols['prompt']!r} is missing or null")
    try:
        prompt, messages = _prompt(value)
    except ValueError as e:
        raise ValueError(f"prompt column {cols['prompt']!r} {e}") from None
    try:
        tests = _tests(cell("tests"))
    except ValueError as e:
        raise ValueError(f"tests column {cols['tests']!r} {e}") from None
    answer, steps = "", []
    value = cell("answer")
    if value is None or (tests and value == ""):
        if not tests:
            raise ValueError(f"answer column {cols['answer']!r} is missing or null")
    else:
        try:
            answer, steps = normalise_answer(value, fmt)
        except ValueError as e:
            raise ValueError(f"answer column {cols['answer']!r} {e}") from None
    source = cell("data_source")
    if source is not None and not isinstance(source, str):
        raise ValueError(f"data_source column {cols['data_source']!r} should be a string, got {source!r:.80}")
    source = source.strip() if source and source.strip() else default_source
    rec: dict[str, Any] = {
        "id": f"{source}-{hashlib.sha256(prompt.encode('utf-8')).hexdigest()[:12]}",
        "prompt": prompt,
        "answer": answer,
        "difficulty": 0,
        "kind": "code" if tests else "math",
        "solution_steps": steps,
        "data_source": source,
    }
    if messages is not None:
        rec["messages"] = messages
    choices = cell("choices")
    if choices is not None:
        if not isinstance(choices, list):
            raise ValueError(f"choices column {cols['choices']!r} should be a list, got {type(choices).__name__}")
        rec["choices"] = [c if isinstance(c, str) else json.dumps(c, ensure_ascii=False) for c in choices]
    language = cell("language")
    if language is not None:
        if not isinstance(language, str):
            raise ValueError(f"language column {cols['language']!r} should be a string, got {language!r:.80}")
        rec["language"] = language
    if tests:
        rec["tests"] = tests
    return rec


def _load_source(src: DataSource, key: str, default_split: str) -> tuple[list[dict[str, Any]], int, int]:
    """(unique records in file order, rows in the file, duplicate rows dropped)."""
    if not src.path:
        raise ValueError(f"{key}.path: no file given")
    cols = _columns(src, key)
    path = Path(src.path).expanduser()
    rows = _read_rows(path, src.split, key, default_split)
    for field, col in cols.items():
        if col and all(_get(r, col) is _MISSING for r in rows):
            raise ValueError(f"{path}: no column {col!r} ({key}.{field}); columns: {', '.join(_column_names(rows))}")
    fmt = src.answer_format
    if fmt == "auto":
        fmt = _PRESET_FORMAT.get(src.preset, "auto")
    default_source = src.name or path.stem
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n, row in enumerate(rows, 1):
        try:
            rec = _record(row, cols, fmt, default_source)
        except ValueError as e:
            raise ValueError(f"{path}: row {n}: {e}") from None
        sig = json.dumps(rec, sort_keys=True, ensure_ascii=False)
        if sig not in seen:
            seen.add(sig)
            out.append(rec)
    return out, len(rows), len(rows) - len(out)


def _mix(records: list[dict[str, Any]], src: DataSource, key: str, seed: str, what: str) -> list[dict[str, Any]]:
    """The rows the source contributes: `samples` drawn without replacement, else round(weight x rows)."""
    n = len(records)
    rng = random.Random(seed)
    if src.samples > 0:
        if src.samples > n:
            raise ValueError(f"{key}.samples: {src.samples} asked, but {src.path} has {n} {what}")
        return [records[i] for i in sorted(rng.sample(range(n), src.samples))]
    total = round(src.weight * n)
    whole = min(total // n, math.floor(src.weight)) if n else 0
    rest = sorted(rng.sample(range(n), total - whole * n))
    return [rec for _ in range(whole) for rec in records] + [records[i] for i in rest]


class _TrainIndex:
    """Normalised train prompts and their word n-grams, for decontamination."""

    def __init__(self, prompts: list[str], ngram: int) -> None:
        self.ngram = ngram
        self.exact = {normalise_prompt(p) for p in prompts}
        self.grams: set[tuple[str, ...]] = set()
        if ngram > 0:
            for p in self.exact:
                self.grams.update(self._grams(p))

    def _grams(self, normalised: str) -> set[tuple[str, ...]]:
        words = _WORD.findall(normalised)
        return {tuple(words[i : i + self.ngram]) for i in range(len(words) - self.ngram + 1)}

    def verdict(self, prompt: str) -> str:
        """ "exact", "ngram" or "" (clean)."""
        norm = normalise_prompt(prompt)
        if norm in self.exact:
            return "exact"
        if self.ngram > 0 and not self._grams(norm).isdisjoint(self.grams):
            return "ngram"
        return ""


def _source_report(key: str, src: DataSource, rows: int, dups: int, used: int, **extra: Any) -> dict[str, Any]:
    """One source's line in data/sources_report.json."""
    name = src.name or Path(src.path).stem
    return {
        "source": key,
        "name": name,
        "path": src.path,
        "rows": rows,
        "duplicates_dropped": dups,
        **extra,
        "used": used,
    }


def _load(cfg: Config, errors: list[str] | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """load_problems; with `errors` a list, a bad source's line is appended there and the source skipped."""

    def attempt(src: DataSource, fn: Any, *args: Any) -> Any:
        if errors is None:
            return fn(*args)
        try:
            return fn(*args)
        except ValueError as e:
            errors.append(str(e))
        except Exception as e:  # noqa: BLE001 - the submit-time check reports, never raises
            errors.append(f"{src.path}: could not be loaded: {type(e).__name__}: {e}")
        return None

    d = cfg.data
    report: dict[str, Any] = {"train": [], "heldout": [], "decontam_ngram": d.decontam_ngram}
    train: list[dict[str, Any]] = []
    for i, src in enumerate(d.train):
        key = f"data.train[{i}]"
        loaded = attempt(src, _load_source, src, key, "train")
        if loaded is None:
            continue
        unique, rows, dups = loaded
        picked = attempt(src, _mix, unique, src, key, f"data-train-{cfg.seed}-{i}", "unique rows")
        if picked is None:
            continue
        train += picked
        report["train"].append(_source_report(key, src, rows, dups, len(picked)))
    index = _TrainIndex([r["prompt"] for r in train], d.decontam_ngram)
    heldout: list[dict[str, Any]] = []
    for i, src in enumerate(d.heldout):
        key = f"data.heldout[{i}]"
        loaded = attempt(src, _load_source, src, key, "test")
        if loaded is None:
            continue
        unique, rows, dups = loaded
        verdicts = [index.verdict(r["prompt"]) for r in unique]
        clean = [r for r, v in zip(unique, verdicts) if not v]
        contamination = {"exact": verdicts.count("exact"), "ngram": verdicts.count("ngram"), "kept": len(clean)}
        picked = attempt(
            src,
            _mix,
            clean,
            src,
            key,
            f"data-heldout-{cfg.seed}-{i}",
            f"unique rows not in the train set ({contamination})",
        )
        if picked is None:
            continue
        heldout += picked
        report["heldout"].append(_source_report(key, src, rows, dups, len(picked), contamination=contamination))
    report["train_problems"], report["heldout_problems"] = len(train), len(heldout)
    for key, records, total in (("data.train", train, d.train), ("data.heldout", heldout, d.heldout)):
        if total and not records:
            line = f"{key}: no problems left (weights, samples and decontamination kept none of {len(total)} sources)"
            if errors is None:
                raise ValueError(line)
            if not errors:  # else the sources' own errors explain it
                errors.append(line)
    return train, heldout, report


def load_problems(cfg: Config) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(train records, held-out records, report) from cfg.data.train / cfg.data.heldout.

    The report has, per source, rows, duplicates_dropped and used, and for held-out sources the
    decontamination counts {exact, ngram, kept}. Deterministic in the config (seed included).
    """
    return _load(cfg, None)


def source_problems(cfg: Config) -> list[str]:
    """Every problem with the run's dataset files, one line each, found by loading them exactly as
    the data stage does (empty list when fine or when the run's problems are generated)."""
    d = cfg.data
    if not d.train and not d.heldout:
        return []
    errors: list[str] = []
    train, heldout, _ = _load(cfg, errors)
    if errors:
        return errors
    if cfg.eval.problems > len(heldout):
        errors.append(
            f"eval.problems: {cfg.eval.problems} > the {len(heldout)} held-out problems of data.heldout "
            "(after decontamination); 0 takes them all"
        )
    if cfg.rejection.prompts > len(train):
        errors.append(f"rejection.prompts: {cfg.rejection.prompts} > the {len(train)} train problems of data.train")
    return errors
