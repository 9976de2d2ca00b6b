"""A megatron checkpoint as the ReAct policy of the offline environment, and the agent metrics.

:class:`GreedyGenerator` decodes greedily with a megatron-core ``GPTModel`` (megatron-core's static KV cache), stopping at ``<|im_end|>``, ``<tool_response>`` or end of text, after at most
``max_new_tokens``. :func:`model_act` wraps it as the :data:`data_tools.synthesis.rollout.Act` that the rollout loop calls:
the prompt is the conversation rendered exactly as ``data sft`` renders SFT samples (the agent system turn with
the tool block, then the Qwen3 chat turns) followed by ``<|im_start|>assistant\\n``. Every generated turn is
classified when it is generated (:func:`classify_turn`), before the rollout loop may overwrite it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from data_tools.synthesis.trajectory import parse_action_text

TOOLS = {"search": "query", "visit": "url"}
"""Tools of the offline environment and their required argument."""

TURN_KINDS = ("valid_call", "invalid_call", "answer", "no_action")
"""Classes of an assistant turn."""


def classify_turn(text: str) -> str:
    """``valid_call`` (a ``<tool_call>`` whose JSON names a tool of the environment with its required argument
    as a string or list of strings), ``invalid_call`` (any other ``<tool_call>``), ``answer`` (an ``<answer>``)
    or ``no_action``. The first call of a turn counts (the one the environment executes)."""
    _, calls, answer = parse_action_text(text)
    if calls:
        call = calls[0]
        if call.raw is not None or call.name not in TOOLS:
            return "invalid_call"
        value = call.arguments.get(TOOLS[call.name]) if isinstance(call.arguments, dict) else None
        ok = (isinstance(value, str) and value.strip()) or (
            isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value)
        )
        return "valid_call" if ok else "invalid_call"
    return "answer" if answer is not None else "no_action"


@dataclass
class AgentMetrics:
    """Counts over the agent questions of one model."""

    questions: int = 0
    """Questions rolled out."""
    correct: int = 0
    """Questions whose final answer the answer judge accepts."""
    turns: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TURN_KINDS, 0))
    """Assistant turns per class (:func:`classify_turn`)."""

    @property
    def tool_call_valid_rate(self) -> float:
        """Well-formed tool calls / assistant turns that are not a final answer (0.0 when there are none)."""
        denom = self.turns["valid_call"] + self.turns["invalid_call"] + self.turns["no_action"]
        return self.turns["valid_call"] / denom if denom else 0.0

    @property
    def answer_accuracy(self) -> float:
        """Share of questions answered correctly (the project's answer judge)."""
        return self.correct / self.questions if self.questions else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON form with both rates."""
        return {
            "questions": self.questions,
            "correct": self.correct,
            "turns": dict(self.turns),
            "tool_call_valid_rate": self.tool_call_valid_rate,
            "answer_accuracy": self.answer_accuracy,
        }


class GreedyGenerator:
    """Greedy decoding with a megatron-core GPT model over Qwen3 ids (through an optional experiment vocabulary).

    Uses megatron-core's ``StaticInferenceContext`` KV cache (the tokens equal those of a full forward per step,
    tested)."""

    def __init__(self, model: Any, vocab: Any | None, max_length: int, device: Any = "cpu") -> None:
        import torch

        self.torch = torch
        self.model = model
        self.vocab = vocab
        self.max_length = max_length
        self.device = device
        from data_tools.indexed.tokenizers import load_tokenizer

        self.tok = load_tokenizer("qwen3")
        self.stop = {151643, 151645, 151665}  # <|endoftext|>, <|im_end|>, <tool_response>
        self.limit = len(vocab.kept) if vocab is not None else None

    def _dense(self, ids: list[int]) -> list[int]:
        return self.vocab.to_dense(ids) if self.vocab is not None else ids

    def generate(self, prompt: str, max_new_tokens: int) -> str:
        """Greedy continuation of ``prompt`` (text) until a stop token or ``max_new_tokens``; returns the text."""
        torch = self.torch
        from megatron.core.inference.contexts import StaticInferenceContext

        from megatron_agentic.platform import device_mode_suspended

        ids = self._dense(self.tok.encode(prompt))
        keep = max(1, self.max_length - max_new_tokens)
        ids = ids[-keep:]  # the context the model was trained on (left truncation when longer)
        stop = set(self._dense(sorted(self.stop)))
        out: list[int] = []
        # megatron-core's static KV cache: one forward of the prompt, then one token per step
        cache = StaticInferenceContext(1, len(ids) + max_new_tokens)
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        pos = torch.arange(len(ids), dtype=torch.long, device=self.device).unsqueeze(0)
        # without the CPU platform's device mode: its dispatch would cost this loop of small ops 1.4x the time
        with torch.no_grad(), device_mode_suspended():
            for _ in range(max_new_tokens):
                logits = self.model(x, pos, None, inference_context=cache, runtime_gather_output=True)
                cache.sequence_len_offset += x.shape[1]
                last = logits[0, -1]
                if self.limit is not None:
                    last = last[: self.limit]  # never the unknown id or vocabulary padding
                nxt = int(torch.argmax(last).item())
                if nxt in stop:
                    break
                out.append(nxt)
                x = torch.tensor([[nxt]], dtype=torch.long, device=self.device)
                pos = torch.tensor([[cache.sequence_len_offset]], dtype=torch.long, device=self.device)
        qwen = self.vocab.to_qwen3(out) if self.vocab is not None else out
        return self.tok.decode(qwen)


def render_prompt(messages: Sequence[dict[str, str]], system: str) -> str:
    """The conversation as ``data sft`` renders it, plus the assistant header (the generation prompt)."""
    from data_tools.synthesis.serialize import IM_START, render_chat

    return render_chat([{"role": "system", "content": system}, *messages]) + f"{IM_START}assistant\n"


def model_act(
    generator: GreedyGenerator, max_new_tokens: int, turns: list[str], system: str
) -> Callable[[list[dict[str, str]], int], Any]:
    """The generator as a rollout :data:`~data_tools.synthesis.rollout.Act`; appends each turn's class to ``turns``."""

    async def act(messages: list[dict[str, str]], call: int) -> str | None:
        text = generator.generate(render_prompt(messages, system), max_new_tokens)
        turns.append(classify_turn(text))
        return text

    return act


def evaluate_agent(
    generator: GreedyGenerator,
    questions: list[Any],
    env: Any,
    max_calls: int,
    max_new_tokens: int,
    tools: Sequence[str] | None = None,
):
    """Roll out ``questions`` with the model in ``env``; returns ``(AgentMetrics, trajectory records)``.

    The system turn declares ``tools`` exactly as ``data sft --tools`` does for the SFT samples.
    """
    import asyncio

    from data_tools.synthesis.rollout import RolloutConfig, rollout
    from data_tools.synthesis.serialize import agent_system
    from data_tools.synthesis.sft import tool_specs

    system = agent_system(None, tool_specs(tools))
    tok = generator.tok
    system_tokens = len(tok.encode(system))
    budget = max(256, generator.max_length - max_new_tokens)
    cfg = RolloutConfig(max_calls=max_calls, max_context_tokens=budget, seed=0)
    metrics = AgentMetrics()
    records = []
    for q in questions:
        turns: list[str] = []
        act = model_act(generator, max_new_tokens, turns, system)
        rec = asyncio.run(rollout(q, act, env, cfg, lambda text: system_tokens + len(tok.encode(text))))
        rec["turn_kinds"] = turns
        records.append(rec)
        metrics.questions += 1
        metrics.correct += rec.get("judgment") is True
        for kind in turns:
            metrics.turns[kind] += 1
    return metrics, records
