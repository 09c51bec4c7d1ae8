"""The cost planner (r1hpc.plan): parameter counts, memory, layout rules, calibration, CLI output."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from r1hpc.config import load_config
from r1hpc.plan import PlanError, main, make_plan
from r1hpc.plan.flops import V3_REFERENCE, calibrate
from r1hpc.plan.layout import pipeline_split
from r1hpc.plan.memory import layer_activation_bytes, state_bytes_per_param
from r1hpc.plan.params import count_params, kv_cache_elems_per_token

ROOT = Path(__file__).resolve().parent.parent
V3 = str(ROOT / "configs" / "deepseek_v3_671b.yaml")
STUDENTS = str(ROOT / "configs" / "students.yaml")


@pytest.fixture(scope="module")
def v3():
    return load_config(V3)


@pytest.fixture(scope="module")
def student():
    return load_config(STUDENTS)


def test_v3_parameter_counts(v3):
    pc = count_params(v3.model)
    assert abs(pc.total / 671e9 - 1) < 0.01, pc.total
    assert abs(pc.active / 37e9 - 1) < 0.02, pc.active
    # The HF checkpoint (685B) also stores the MTP module with its own copy of embedding and head.
    assert abs((pc.total + pc.mtp + pc.embedding + pc.head) / 685e9 - 1) < 0.01
    assert pc.dense_layers == 3 and pc.moe_layers == 58


def test_v3_config_is_the_published_shape(v3):
    fields = (
        "num_layers",
        "hidden_size",
        "num_heads",
        "intermediate_size",
        "vocab_size",
        "num_experts",
        "experts_per_token",
        "num_shared_experts",
        "moe_intermediate_size",
        "first_dense_layers",
        "attention",
        "q_lora_rank",
        "kv_lora_rank",
        "qk_nope_head_dim",
        "qk_rope_head_dim",
        "v_head_dim",
        "mtp_layers",
    )
    assert {f: getattr(v3.model, f) for f in fields} == {f: getattr(V3_REFERENCE, f) for f in fields}


def test_dense_student_parameter_count(student):
    pc = count_params(student.model)
    assert pc.total == pc.active  # dense: every parameter is active
    assert abs(pc.total / 7.62e9 - 1) < 0.01, pc.total  # Qwen2.5-7B: 7.62B


def test_tied_embeddings_count_once(student):
    tied = dataclasses.replace(student.model, tie_embeddings=True)
    assert (
        count_params(student.model).total - count_params(tied).total
        == student.model.vocab_size * student.model.hidden_size
    )


def test_mla_kv_cache_is_the_latent():
    assert kv_cache_elems_per_token(V3_REFERENCE) * 2 == 61 * (512 + 64) * 2  # 70 kB per token in bf16


def test_memory_rows_sum_and_states_match_the_table(v3):
    plan = make_plan(v3)
    for s in plan.memory:
        assert s.total == pytest.approx(s.weights + s.grads + s.optimizer + s.activations + s.logits)
    assert sum(plan.layout.stage_layers) == 61 and len(plan.memory) == 4
    assert plan.memory[-1].logits > 0 and plan.memory[0].logits == 0
    # Megatron distributed optimizer: 2 + 4 + 12/d bytes per parameter.
    assert sum(state_bytes_per_param("megatron", True, 4)) == pytest.approx(9.0)
    assert sum(state_bytes_per_param("megatron", False, 4)) == pytest.approx(18.0)
    assert sum(state_bytes_per_param("deepspeed", True, 8)) == pytest.approx(5.5)


def test_dense_states_by_hand(student):
    plan = make_plan(student)
    s = plan.memory[0]
    pc = count_params(student.model)
    assert s.params == pc.total  # tp = pp = 1
    assert s.weights + s.grads + s.optimizer == pytest.approx(pc.total * (2 + 2 + 12 / 16))


def test_recompute_orders_activation_memory(v3):
    sizes = [layer_activation_bytes(v3.model, True, mode, 4096, 1, False) for mode in ("none", "selective")]
    assert sizes[0] > sizes[1] > 0
    plans = {mode: make_plan(load_config(V3, [f"parallel.recompute={mode}"])) for mode in ("none", "selective", "full")}
    acts = {mode: p.memory[0].activations for mode, p in plans.items()}
    assert acts["none"] > acts["selective"] > acts["full"] > 0


def test_v3_layout_fits_and_a_smaller_one_is_flagged(v3, capsys):
    assert make_plan(v3).fits
    # 16 nodes: dp = edp = 1, so Adam states are not sharded at all.
    small = make_plan(load_config(V3, ["launch.train.nodes=16"]))
    assert not small.fits
    assert any("more than the" in w and "GiB usable" in w for w in small.warnings)
    assert main([V3, "launch.train.nodes=16"]) == 1
    assert "NO" in capsys.readouterr().out


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["parallel.ep=256"], "parallel.ep"),  # 512 GPUs % (expert_tp 1 * ep 256 * pp 4) != 0
        (["parallel.sequence_parallel=false"], "parallel.sequence_parallel"),
        (["parallel.cp=3"], "parallel.tp"),  # 512 GPUs % (tp 8 * pp 4 * cp 3) != 0
        (["launch.gpu_type=v100"], "launch.gpu_type"),
        (["parallel.expert_tp=3"], "parallel.expert_tp"),
        (["grpo.micro_batch_size=3"], "grpo.micro_batch_size"),
        (["launch.train.tasks_per_node=4"], "launch.train.tasks_per_node"),  # Megatron: one rank per GPU
    ],
)
def test_impossible_layouts_name_the_key(overrides, key, capsys):
    with pytest.raises(PlanError, match=key.replace(".", r"\.")):
        make_plan(load_config(V3, overrides))
    assert main([V3, *overrides]) == 2
    assert key in capsys.readouterr().err


def test_tiny_cpu_config_needs_a_gpu_type():
    with pytest.raises(PlanError, match=r"launch\.gpu_type"):
        make_plan(load_config(str(ROOT / "configs" / "tiny.yaml")))


def test_pipeline_split_balances_with_remainder_in_the_middle():
    assert pipeline_split(61, 4) == (15, 16, 15, 15)
    split = pipeline_split(61, 16)
    assert sum(split) == 61 and split[0] == split[-1] == 3 and max(split) == 4
    assert pipeline_split(8, 1) == (8,)


def test_calibration_against_v3_pretraining():
    cal = calibrate()
    assert abs(cal.error) < 0.05, cal.line()  # the stated band: within 5% of 2.664M H800 GPU-hours
    assert 0.3 < cal.implied_mfu < 0.5
    assert calibrate(mfu=cal.implied_mfu).error == pytest.approx(0.0, abs=1e-9)
    assert calibrate(mfu=0.2).estimate_gpu_hours == pytest.approx(2 * calibrate(mfu=0.4).estimate_gpu_hours)


def test_stage_estimates_scale_with_the_config(v3):
    base = {e.name: e for e in make_plan(v3).stages}
    assert set(base) == {"r1_zero", "cold_start", "reasoning_rl", "rejection", "sft", "rl_all", "distill", "eval"}
    doubled = {e.name: e for e in make_plan(load_config(V3, ["r1_zero.steps=1300"])).stages}
    assert doubled["r1_zero"].gpu_hours == pytest.approx(2 * base["r1_zero"].gpu_hours)
    assert doubled["sft"].gpu_hours == pytest.approx(base["sft"].gpu_hours)
    assert base["distill"].gpu_hours == 0  # no student given
    # eval samples the general held-out prompts too (scored by the reward model) unless eval.general=false
    no_general = {e.name: e for e in make_plan(load_config(V3, ["eval.general=false"])).stages}
    assert no_general["eval"].gpu_hours < base["eval"].gpu_hours
    assert "data.general_heldout" in base["eval"].note and "general" not in no_general["eval"].note


def test_main_prints_every_section(capsys):
    assert main([V3, "--students", STUDENTS]) == 0
    out = capsys.readouterr().out
    for needle in (
        "== model",
        "671.03B total",
        "== layout",
        "world 512 = tp 8 x pp 4 x cp 4 x dp 4",
        "== memory per GPU",
        "student r1-distill-qwen-7b",
        "== one GRPO step",
        "== R1 stages",
        "calibration: DeepSeek-V3 pretraining",
        "== sbatch: train job",
        "#SBATCH --nodes=64",
        "== sbatch: rollout array",
        "#SBATCH --array=0-15",
        "engine of the rollout tasks: tp 8 x pp 4 x dp 1, expert parallel, bfloat16 on 4 node(s) x 8 GPUs",
        "# engine (config engine, launch.rollout): vLLM LLM(dtype='bfloat16', tensor_parallel_size=8",
        "#SBATCH --ntasks-per-node=8",
        "== sbatch: eval array (8 tasks)",
        "fits: yes",
    ):
        assert needle in out, needle
    assert "#!/bin/bash" not in out and "srun" not in out  # only the #SBATCH lines
