"""The helpfulness/harmlessness reward model: pairs and views, it learns to rank held-out pairs,
scoring, idempotency, and a killed training job resumes to the undisturbed weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from tiny_stage_run import clone_run

import r1hpc.stages.reward_model as rm
from r1hpc.model.prompting import PromptFormat
from r1hpc.stages.common import StageContext, read_data, read_metrics

render_prompt = PromptFormat().render

RM_OVERRIDES = ["reward_model.pairs=48", "reward_model.train.epochs=2", "reward_model.train.save_every=2"]

GENERAL = [
    {
        "id": "g1",
        "prompt": "How can I steal apples?",
        "answer": "I can't help with stealing.",
        "kind": "safety",
        "difficulty": 1,
        "rejected": [{"text": "Take them.", "label": "harmful"}, {"text": "No.", "label": "unhelpful"}],
    },
    {
        "id": "g2",
        "prompt": "What does Ada sell?",
        "answer": "Ada sells apples.",
        "kind": "fact",
        "difficulty": 1,
        "rejected": [{"text": "Ada sells pears.", "label": "wrong"}],
    },
]
PROBLEMS = [
    {
        "id": "p1",
        "prompt": "Compute 2 + 3.",
        "answer": "5",
        "difficulty": 1,
        "kind": "arith",
        "solution_steps": ["2 + 3 = 5"],
    }
]


def test_views_read_the_answer_only_or_the_whole_output():
    prompt = render_prompt("Hi?")
    completion = " secret thoughts </think> <answer> Hello! </answer>"
    assert rm.helpfulness_view(prompt, completion) == f"{prompt} </think> <answer> Hello! </answer>"
    assert rm.harmlessness_view(prompt, completion) == prompt + completion
    assert rm.helpfulness_view(prompt, " thoughts but no answer") is None
    assert rm.helpfulness_view(prompt, " t </think> <answer>   </answer>") is None


def test_build_pairs_labels_and_heads():
    pairs = rm.build_pairs(GENERAL, PROBLEMS, None, seed=0)
    labels = sorted((rm.HEADS[p["head"]], p["source"], p["label"]) for p in pairs)
    assert labels == [
        ("harmlessness", "general", "harmful"),
        ("harmlessness", "general", "harmful_in_think"),
        ("harmlessness", "math", "harmful_in_think"),
        ("helpfulness", "general", "off_topic"),
        ("helpfulness", "general", "off_topic"),
        ("helpfulness", "general", "unhelpful"),
        ("helpfulness", "general", "wrong"),
        ("helpfulness", "math", "off_topic"),
        ("helpfulness", "math", "wrong"),
    ]
    # off topic: a worked math answer to a request, a request's reference answer to a problem
    off = {p["source"]: p for p in pairs if p["label"] == "off_topic"}
    assert "The answer is 5" in off["general"]["rejected"] and "The answer is 5" in off["math"]["chosen"]
    assert off["math"]["rejected"].endswith(
        ("<answer> I can't help with stealing. </answer>", "<answer> Ada sells apples. </answer>")
    )
    think_harm = next(p for p in pairs if p["label"] == "harmful_in_think" and p["source"] == "general")
    assert "Take them." in think_harm["rejected"].split("</think>")[0]  # the harm is in the reasoning only
    math_help = next(p for p in pairs if p["source"] == "math" and rm.HEADS[p["head"]] == "helpfulness")
    assert "The answer is 5" in math_help["chosen"] and "2 + 3 = 5" not in math_help["chosen"]  # answer only
    assert rm.build_pairs(GENERAL, PROBLEMS, None, seed=0) == pairs  # deterministic
    assert len(rm.build_pairs(GENERAL, PROBLEMS, 3, seed=0)) == 3  # ceil(2/3 * 3) general + 1 math
    assert sum(p["source"] == "math" for p in rm.build_pairs(GENERAL, PROBLEMS, 3, seed=0)) == 1


def test_reward_model_ranks_heldout_pairs_and_scores(tmp_path):
    run = clone_run(tmp_path, RM_OVERRIDES)
    result = rm.train_reward_model(str(run))
    assert result["version"] == "v0000" and result["pairs"] == 48 and result["steps"] == 6
    assert result["heldout_pairs"] >= 40
    assert result["heldout_accuracy"] > 0.6, result  # chance is 0.5 (the zero heads tie every pair)
    rows = read_metrics(run, "reward_model")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and "heldout_accuracy" in rows[-1]

    ctx = StageContext(run)
    general = read_data(ctx, "general_heldout")[:4]
    prompts = [render_prompt(g["prompt"]) for g in general]
    completions = [f" I think. </think> <answer> {g['answer']} </answer>" for g in general]
    parts = rm.reward_model_components(ctx, prompts + prompts[:1], completions + [" I think, no answer."])
    assert all(0.0 <= c[k] <= 1.0 for c in parts for k in ("helpfulness", "harmlessness", "score"))
    assert parts[-1]["helpfulness"] == rm.NO_ANSWER_HELPFULNESS
    assert parts[0]["score"] == pytest.approx(0.5 * (parts[0]["helpfulness"] + parts[0]["harmlessness"]))
    scores = rm.score_with_reward_model(ctx, prompts, completions)
    assert scores == pytest.approx([c["score"] for c in parts[:4]], abs=1e-6)  # batching does not change a score
    with pytest.raises(ValueError, match="4 prompts but 3 completions"):
        rm.score_with_reward_model(ctx, prompts, completions[:3])

    again = rm.train_reward_model(str(run))
    assert again["skipped"] == "already published" and again["heldout_accuracy"] == result["heldout_accuracy"]


class Killed(Exception):
    pass


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    undisturbed = clone_run(tmp_path / "a", RM_OVERRIDES)
    rm.train_reward_model(str(undisturbed))

    killed = clone_run(tmp_path / "b", RM_OVERRIDES)
    real_log = rm.log_metrics

    def die_at_step_3(ctx, stage, record):
        real_log(ctx, stage, record)
        if record.get("step") == 3:
            raise Killed

    monkeypatch.setattr(rm, "log_metrics", die_at_step_3)
    with pytest.raises(Killed):
        rm.train_reward_model(str(killed))
    monkeypatch.setattr(rm, "log_metrics", real_log)
    rm.train_reward_model(str(killed))  # resumes from the step-2 checkpoint
    a = load_file(str(undisturbed / "models" / "reward_model" / "v0000" / "model.safetensors"))
    b = load_file(str(killed / "models" / "reward_model" / "v0000" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
