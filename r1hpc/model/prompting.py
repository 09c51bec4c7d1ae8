"""How a problem becomes the text a model continues, and that text's token ids: one definition for
rollouts, rejection sampling, SFT sets, distillation, the reward model and eval.

Two formats (config `prompt`):
- "r1": R1's plain template, ``User: {question}\\nAssistant: <think>``; needs no chat template.
- "chat": the checkpoint's own chat template (``tokenizer.apply_chat_template`` with the
  generation prompt), an optional system message first, then ``<think>`` when `open_think` is set
  (as DeepSeek-R1's template does), so the completion continues the thinking block in both.

`encode_prompt` is the ONE way prompt text becomes ids: the generator samples from exactly these
ids and the trainer scores exactly these (stored as the record's prompt_ids). A tokenizer that
adds BOS gets it once: added to plain text, not added again when the rendered chat template
already starts with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["R1_TEMPLATE", "THINK_OPEN", "PromptFormat", "encode_prompt", "encode_prompts"]

R1_TEMPLATE = "User: {prompt}\nAssistant: <think>"
THINK_OPEN = "<think>"


@dataclass(frozen=True)
class PromptFormat:
    """A prompt format bound to one tokenizer (chat templates differ between checkpoints)."""

    format: str = "r1"  # "r1" | "chat"
    system: str = ""
    open_think: bool = True
    tokenizer: Any = None  # needed for "chat"

    def __post_init__(self) -> None:
        if self.format not in ("r1", "chat"):
            raise ValueError(f"prompt.format must be 'r1' or 'chat', got {self.format!r}")
        if self.format == "chat":
            if self.tokenizer is None:
                raise ValueError("prompt.format 'chat' needs the model's tokenizer")
            if not getattr(self.tokenizer, "chat_template", None):
                raise ValueError(
                    f"prompt.format is 'chat' but the tokenizer of "
                    f"{getattr(self.tokenizer, 'name_or_path', '?')} has no chat_template"
                )

    @property
    def ends_with_think(self) -> bool:
        """Whether every rendered prompt ends with <think> (the format reward then expects the
        completion to continue the thinking block)."""
        return self.format == "r1" or self.open_think

    def messages(self, problem: dict[str, Any] | str) -> list[dict[str, str]]:
        """The chat messages of a problem: its own `messages` (from a chat dataset) or one user
        turn with its prompt; the configured system message first unless the problem has one."""
        if isinstance(problem, str):
            msgs = [{"role": "user", "content": problem}]
        elif problem.get("messages"):
            msgs = [{"role": m["role"], "content": m["content"]} for m in problem["messages"]]
        else:
            msgs = [{"role": "user", "content": problem["prompt"]}]
        if self.system and msgs[0]["role"] != "system":
            msgs = [{"role": "system", "content": self.system}, *msgs]
        return msgs

    def render(self, problem: dict[str, Any] | str) -> str:
        """The prompt text for a problem record (or a bare question)."""
        if self.format == "r1":
            question = problem if isinstance(problem, str) else problem["prompt"]
            return R1_TEMPLATE.format(prompt=question)
        try:
            text = self.tokenizer.apply_chat_template(
                self.messages(problem), tokenize=False, add_generation_prompt=True
            )
        except Exception as e:  # jinja errors of a user's template: any type
            raise ValueError(
                f"the chat template of {getattr(self.tokenizer, 'name_or_path', '?')} "
                f"does not render: {type(e).__name__}: {e}"
            ) from e
        if not isinstance(text, str) or not text:
            raise ValueError(
                f"the chat template of {getattr(self.tokenizer, 'name_or_path', '?')} "
                f"rendered {text!r}; expected the prompt text"
            )
        return text + THINK_OPEN if self.open_think else text


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of prompt text, with the tokenizer's BOS once (module docstring)."""
    bos = getattr(tokenizer, "bos_token", None)
    already = bool(bos) and text.startswith(bos)
    ids = list(tokenizer(text, add_special_tokens=not already)["input_ids"])
    eos = tokenizer.eos_token_id
    if not already and ids and ids[-1] == eos and not text.endswith(tokenizer.eos_token):
        ids.pop()  # tokenizers set to append eos (add_eos_token): a prompt must not end the text
    return ids


def encode_prompts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return [encode_prompt(tokenizer, t) for t in texts]
