"""The user's own rule rewards, named in ``rewards.custom`` by import path.

``rewards.custom: {my_reward: "package.module:function"}`` or ``{my_reward: "path/to/file.py:function"}``
adds ``my_reward`` to the names every RL stage's ``rewards: {name: weight}`` may use. The function
has the built-ins' contract: ``(completion: str, example: dict) -> float | None``.

Isolation, as for the built-ins: user code is never imported in the trainer / rollout process.
``reward_table`` puts a small picklable ``CustomReward(spec)`` in the table; the worker pool sends
it to a worker like any module-level function (pickled by reference: the class plus the spec
string), and ``CustomReward.__call__`` imports the spec *inside the worker* (under the worker's
RLIMIT_AS and the item's deadline) and caches the function for that worker's later items. A
reward that raises, times out or returns garbage at scoring time is counted by the scorer
("error" / "timeout" / "memory") and scores 0; the run goes on. Note that a worker's first item
also pays the import of the user's module, within ``rewards.timeout_s``.

Paths: a ``module:function`` spec is imported from the worker's ``sys.path`` (the submitting /
job process's; install the package or set PYTHONPATH). A relative ``file.py`` path is relative to
the current directory of the process building the table: the submit-time check resolves it
against the submit directory, the jobs against theirs (jobs run in the same working directory in
this project). The config keeps the value as written. A file is loaded under a module name
derived from its absolute path (``_r1hpc_custom_<stem>_<hash>``), the same in every process, and
registered in ``sys.modules`` so objects defined in it pickle within that worker.

``custom_reward_problems(cfg)`` is the submit-time check (``r1hpc.inputs.input_problems``): the
spec's shape, import, attribute, callability and signature, then one trial call through a real
``WorkerPool`` with the run's limits.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import numbers
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from r1hpc.config import Config

__all__ = [
    "RewardSpec",
    "parse_spec",
    "module_name_for",
    "load_function",
    "CustomReward",
    "reward_table",
    "custom_reward_problems",
    "TRIAL_COMPLETION",
    "TRIAL_EXAMPLE",
]

EXPECTED = "expected 'package.module:function' or 'path/to/file.py:function'"
TRIAL_COMPLETION = "<think>x</think><answer>1</answer>"
TRIAL_EXAMPLE: dict[str, Any] = {"prompt": "1?", "answer": "1", "language": None, "prompt_ends_with_think": True}

# Functions already imported in this process, by resolved spec (one import per worker).
_LOADED: dict[str, Callable[..., Any]] = {}


@dataclass(frozen=True)
class RewardSpec:
    """A parsed spec: ``kind`` "module" (``target`` a dotted module name) or "file" (``target``
    an absolute path); ``attr`` the (possibly dotted) attribute path of the function."""

    kind: Literal["module", "file"]
    target: str
    attr: str

    def __str__(self) -> str:
        return f"{self.target}:{self.attr}"


def _is_dotted_name(s: str) -> bool:
    return bool(s) and all(part.isidentifier() for part in s.split("."))


def parse_spec(spec: Any, base_dir: str | None = None) -> RewardSpec:
    """Parse ``module:function`` / ``file.py:function``; a relative file path is resolved against
    ``base_dir`` (default: the current directory). Raises ValueError saying what was expected."""
    if not isinstance(spec, str):
        raise ValueError(f"{EXPECTED}, got {type(spec).__name__} {spec!r}")
    target, sep, attr = spec.strip().rpartition(":")
    if not sep:
        raise ValueError(f"{spec!r} has no ':'; {EXPECTED}")
    if not target:
        raise ValueError(f"{spec!r} has nothing before ':'; {EXPECTED}")
    if not _is_dotted_name(attr):
        raise ValueError(f"{spec!r}: {attr!r} after ':' is not a function name; {EXPECTED}")
    if target.endswith(".py") or "/" in target or os.sep in target:
        if not target.endswith(".py"):
            raise ValueError(f"{spec!r}: a file path must end in .py; {EXPECTED}")
        path = os.path.abspath(os.path.join(base_dir or os.getcwd(), os.path.expanduser(target)))
        return RewardSpec("file", path, attr)
    if not _is_dotted_name(target):
        raise ValueError(f"{spec!r}: {target!r} is not a module name; {EXPECTED}")
    return RewardSpec("module", target, attr)


def module_name_for(path: str) -> str:
    """The stable module name a reward file is loaded under (same absolute path, same name)."""
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0]) or "reward"
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
    return f"_r1hpc_custom_{stem}_{digest}"


def _import_target(spec: RewardSpec) -> Any:
    if spec.kind == "module":
        return importlib.import_module(spec.target)
    name = module_name_for(spec.target)
    if name in sys.modules:
        return sys.modules[name]
    if not os.path.isfile(spec.target):
        raise FileNotFoundError(f"no such file {spec.target}")
    module_spec = importlib.util.spec_from_file_location(name, spec.target)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot load {spec.target} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _get_attr(module: Any, spec: RewardSpec) -> Any:
    obj = module
    for part in spec.attr.split("."):
        if not hasattr(obj, part):
            raise AttributeError(f"{spec.target} has no attribute {spec.attr!r}")
        obj = getattr(obj, part)
    return obj


def load_function(spec: str | RewardSpec) -> Callable[..., Any]:
    """Import the spec and return its function (cached per process). Runs user code: call it
    only inside a worker (``CustomReward`` does)."""
    rs = spec if isinstance(spec, RewardSpec) else parse_spec(spec)
    key = f"{rs.kind}:{rs}"
    fn = _LOADED.get(key)
    if fn is None:
        fn = _get_attr(_import_target(rs), rs)
        if not callable(fn):
            raise TypeError(f"{rs} is a {type(fn).__name__}, not callable")
        _LOADED[key] = fn
    return fn


@dataclass(frozen=True)
class CustomReward:
    """A picklable reference to a user reward: sent to workers as (class, spec) and imported
    there on the first call. ``spec`` is resolved (a file path is absolute)."""

    spec: RewardSpec

    def __call__(self, completion: str, example: dict) -> Any:
        return load_function(self.spec)(completion, example)


def reward_table(custom: Mapping[str, str] | None = None, base_dir: str | None = None) -> dict[str, Callable[..., Any]]:
    """``REWARD_FUNCS`` plus one ``CustomReward`` per ``rewards.custom`` entry (nothing imported).

    Raises ValueError for a name that shadows a built-in or a malformed spec.
    """
    from r1hpc.rewards import REWARD_FUNCS

    table: dict[str, Callable[..., Any]] = dict(REWARD_FUNCS)
    for name, spec in (custom or {}).items():
        if name in REWARD_FUNCS:
            raise ValueError(f"rewards.custom.{name}: shadows the built-in reward {name!r}; choose another name")
        try:
            table[name] = CustomReward(parse_spec(spec, base_dir))
        except ValueError as e:
            raise ValueError(f"rewards.custom.{name}: {e}") from None
    return table


def _inspect_spec(spec: RewardSpec) -> str:
    """Worker side of the check: "" if the spec imports to a function taking (completion,
    example), else what is wrong."""
    try:
        module = _import_target(spec)
    except BaseException as e:  # noqa: BLE001 - whatever the user's module raises is the answer
        return f"{spec.target} does not import: {type(e).__name__}: {e}"
    try:
        fn = _get_attr(module, spec)
    except AttributeError as e:
        return f"{e}; expected a function (completion, example) -> float | None"
    if not callable(fn):
        return (
            f"{spec} is a {type(fn).__name__}, not callable; expected a function (completion, example) -> float | None"
        )
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return ""  # no introspectable signature (some builtins): the trial call decides
    try:
        sig.bind("completion", {})
    except TypeError as e:
        return (
            f"{spec} has signature {sig}, which cannot take two positional arguments ({e}); "
            "expected (completion, example) -> float | None"
        )
    return ""


def _finite_or_none(value: Any) -> bool:
    return value is None or (
        not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(float(value))
    )


def custom_reward_problems(cfg: Config) -> list[str]:
    """Every problem with ``rewards.custom``, one line each naming ``rewards.custom.<name>``.

    Shape and shadowing are checked here; import, attribute, callability, signature and one
    trial call on a sample (completion, example) run in a ``WorkerPool`` with the run's
    ``rewards.timeout_s`` and ``rewards.memory_mb`` (user code never runs in this process).
    """
    from r1hpc.rewards import REWARD_FUNCS

    r = cfg.rewards
    custom = r.custom or {}
    found: dict[str, str] = {}  # name -> problem (one per reward, listed in config order)
    parsed: dict[str, RewardSpec] = {}
    for name, spec in custom.items():
        if name in REWARD_FUNCS:
            found[name] = f"shadows the built-in reward {name!r}; choose another name"
            continue
        try:
            parsed[name] = parse_spec(spec)
        except ValueError as e:
            found[name] = str(e)
            continue
        if parsed[name].kind == "file" and not os.path.isfile(parsed[name].target):
            found[name] = (
                f"file {parsed[name].target} does not exist (a relative path is relative to the current directory)"
            )
            del parsed[name]
    if parsed:
        found.update(_pool_problems(parsed, r.timeout_s, r.memory_mb))
    return [f"rewards.custom.{name}: {found[name]}" for name in custom if name in found]


def _pool_problems(parsed: dict[str, RewardSpec], timeout_s: float, memory_mb: int) -> dict[str, str]:
    """Import + signature check, then one trial call, of each reward in a worker pool."""
    from r1hpc.rewards.isolation import WorkerPool

    names = list(parsed)
    problems: dict[str, str] = {}
    limits = f"rewards.timeout_s={timeout_s}, rewards.memory_mb={memory_mb}"
    with WorkerPool(1, item_timeout_s=timeout_s, memory_limit_bytes=memory_mb * 1024**2) as pool:
        checks = pool.run([(_inspect_spec, (parsed[n],)) for n in names])
        good = []
        for name, outcome in zip(names, checks):
            if outcome.ok and outcome.value == "":
                good.append(name)
            elif outcome.ok:
                problems[name] = outcome.value
            else:
                problems[name] = (
                    f"importing {parsed[name]} failed in a reward worker "
                    f"({outcome.status}: {outcome.message}; {limits})"
                )
        trials = pool.run([(CustomReward(parsed[n]), (TRIAL_COMPLETION, dict(TRIAL_EXAMPLE))) for n in good])
        for name, outcome in zip(good, trials):
            if outcome.status == "error" and outcome.message.startswith("cannot send result"):
                problems[name] = (
                    f"trial call returned a value that cannot be sent back ({outcome.message}); "
                    "expected a finite number or None"
                )
            elif outcome.status == "error":
                problems[name] = f"trial call raised {outcome.message}"
            elif outcome.status == "timeout":
                problems[name] = f"trial call timed out ({outcome.message}; {limits})"
            elif outcome.status == "memory":
                problems[name] = f"trial call ran out of memory ({limits})"
            elif not _finite_or_none(outcome.value):
                problems[name] = f"trial call returned {outcome.value!r} (expected a finite number or None)"
    return problems
