"""Varied system turns for FAS samples: several real-world agent system prompts and tool subsets.

One fixed system prompt with the full tool block would open every sample with the same ~500 tokens (64% of all
FAS characters in a 1,000-document run), i.e. tens of billions of tokens of one repeated block at the recipe's
scale. Real agent data varies: different products phrase their instructions differently, some add the current
date, and an agent declares the tools relevant to its task. :func:`choose_system` picks, per sample and
deterministically (seeded by the sample id):

* one of :data:`SYSTEM_PROMPTS` (styled on public agent prompts: DeepResearch-like, a terse assistant, a
  citation-focused researcher, ...), in a share of samples followed by a current-date line;
* the full DeepResearch tool block in a ``full_tools_share`` of samples, otherwise a subset: the tool the sample
  uses plus 0-2 others, in the canonical order.
"""

from __future__ import annotations

import random
from typing import Any

from data_tools.synthesis.fas.questions import stable_int
from data_tools.synthesis.serialize import AGENT_SYSTEM_PROMPT, DEEPRESEARCH_TOOLS

SYSTEM_PROMPTS: tuple[str, ...] = (
    AGENT_SYSTEM_PROMPT,
    "You are a helpful assistant that can use tools to look things up. Think step by step, call a tool whenever "
    "you are missing information, and put your final answer inside <answer></answer>.",
    "You are a research agent. Break the user's request into sub-questions, gather evidence with the available "
    "functions, and only state facts you have verified. Wrap the final answer in <answer></answer>.",
    "You are an expert investigator with web access. Prefer primary sources, cross-check claims that matter, "
    "and keep your reasoning concise. End with <answer>your answer</answer>.",
    "As a careful assistant, you answer questions by searching and reading sources. If a tool result is "
    "inconclusive, try another query. Give the answer between <answer> and </answer>.",
    "You help users find accurate information. Plan before acting, use one tool call at a time, and cite what "
    "you found. The final reply must contain <answer></answer> tags.",
    "You are a meticulous fact-finding assistant. Do not rely on memory for specific names, dates or numbers; "
    "check them with tools first. Reply with the answer in <answer></answer>.",
    "You are an autonomous agent that solves information-seeking tasks. Reason about what is still unknown, "
    "choose the most useful tool, and stop once the answer is supported. Use <answer></answer> for it.",
)
"""Agent system prompts (none names a special token)."""
TOOL_NAMES = tuple(t["function"]["name"] for t in DEEPRESEARCH_TOOLS)
DATE_SHARE = 0.5
"""Share of samples whose system prompt ends with a current-date line (as DeepResearch's does)."""


def choose_system(
    sample_id: str, used_tool: str | None, seed: int = 0, full_tools_share: float = 0.2
) -> tuple[str, list[dict[str, Any]]]:
    """``(system prompt, tool declarations)`` for one sample (see the module docstring)."""
    if not 0.0 <= full_tools_share <= 1.0:
        raise ValueError(f"full_tools_share must be in [0, 1], got {full_tools_share}")
    rng = random.Random(stable_int("system", seed, sample_id))
    prompt = rng.choice(SYSTEM_PROMPTS)
    if rng.random() < DATE_SHARE:
        prompt += f"\n\nCurrent date: {rng.randint(2023, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if rng.random() < full_tools_share:
        return prompt, list(DEEPRESEARCH_TOOLS)
    used = used_tool if used_tool in TOOL_NAMES else "search"
    others = [n for n in TOOL_NAMES if n != used]
    keep = {used, *rng.sample(others, rng.randint(0, 2))}
    return prompt, [t for t in DEEPRESEARCH_TOOLS if t["function"]["name"] in keep]
