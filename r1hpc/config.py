"""The r1hpc run config: typed dataclasses -> YAML (configs/*.yaml) -> `key=value` overrides.

    cfg = load_config("configs/tiny.yaml", ["grpo.group_size=16", "launch.executor=slurm"])

Unknown keys, wrong types and impossible values are `ConfigError`s naming the file and line (or
the override) and the dotted key. The resolved config, with the code's git revision, is written
into the run directory once (`write_resolved`); a later submit with a different config is refused.
The sections and keys are in r1hpc/config_schema.py, the rules across keys in r1hpc/config_checks.py.
"""

from __future__ import annotations

import dataclasses
import datetime
import subprocess
import sys
from pathlib import Path

from r1hpc import configio
from r1hpc.config_checks import RL_STAGES, validate
from r1hpc.config_schema import (
    ENGINE_KINDS,
    BaseStageConfig,
    ColdStartConfig,
    Config,
    DataConfig,
    DataSource,
    EngineConfig,
    EvalConfig,
    Executor,
    GRPOConfig,
    JobResources,
    LaunchConfig,
    ModelConfig,
    ParallelConfig,
    PromptConfig,
    Provenance,
    RejectionConfig,
    RewardModelConfig,
    RewardsConfig,
    RLStageConfig,
    SFTStageConfig,
    StudentConfig,
)
from r1hpc.configio import ConfigError

# The schema's names are the config's: `from r1hpc.config import GRPOConfig` is how the code reads them.
__all__ = [
    "Config",
    "ConfigError",
    "load_config",
    "read_run_config",
    "validate",
    "write_resolved",
    "code_revision",
    "ENGINE_KINDS",
    "RL_STAGES",
    "BaseStageConfig",
    "ColdStartConfig",
    "DataConfig",
    "DataSource",
    "EngineConfig",
    "EvalConfig",
    "Executor",
    "GRPOConfig",
    "JobResources",
    "LaunchConfig",
    "ModelConfig",
    "ParallelConfig",
    "PromptConfig",
    "Provenance",
    "RejectionConfig",
    "RewardModelConfig",
    "RewardsConfig",
    "RLStageConfig",
    "SFTStageConfig",
    "StudentConfig",
]


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Load, override and validate. The main entry point for jobs and the CLI."""
    cfg, origins = configio.load(Config, path, overrides)
    return validate(cfg, origins)


def code_revision() -> str:
    """`git` sha of the code (with '-dirty' if the tree has changes), or 'unknown' outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _without_provenance(cfg: Config) -> dict:
    data = configio.to_dict(cfg)
    data.pop("provenance")
    return data


def write_resolved(cfg: Config, argv: list[str] | None = None, into: Path | None = None) -> Path:
    """Write <run>/config.yaml once. Re-submitting the same config is fine (resume); a different
    config for an existing run is refused with the keys that differ. `into`: the directory to
    write it in instead of the run's (a fork being built beside its final place)."""
    from r1hpc.fsio import atomic_write_text

    path = (cfg.run_dir if into is None else Path(into)) / "config.yaml"
    if path.exists():
        existing, _ = configio.load(Config, path)
        old, new = _flatten(_without_provenance(existing)), _flatten(_without_provenance(cfg))
        diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:8])
            raise ConfigError(
                f"{path}: run '{cfg.name}' exists with a different config ({shown}); "
                "use a new run name, or the same config to resume"
            )
        return path
    stamped = dataclasses.replace(
        cfg,
        provenance=Provenance(
            code_revision=code_revision(),
            written_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            command=" ".join(argv if argv is not None else sys.argv),
        ),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "# r1hpc resolved config: written once at submit time\n" + configio.to_yaml(stamped))
    return path


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in data.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def read_run_config(run_dir: str | Path) -> Config:
    """The resolved config of an existing run (what every job of the run reads)."""
    cfg, origins = configio.load(Config, Path(run_dir) / "config.yaml")
    return validate(cfg, origins)
