"""``plan --search``: the layouts of a recipe that pass validation and fit in memory, best first."""

from __future__ import annotations

import itertools

from megatron_agentic.planning.plan import PlanResult, plan_recipe
from megatron_agentic.planning.time import ThroughputTable
from megatron_agentic.recipes import RecipeError, apply_overrides, load_recipe, plan_assumptions

SEARCH_SPACE: dict[str, tuple[int, ...]] = {
    "tensor": (1, 2, 4, 8),
    "context": (1, 2, 4, 8, 16, 32),
    "pipeline": (1, 2, 4, 8),
    "expert": (1, 2, 4, 8, 16, 32, 64),
}
"""Sizes ``plan --search`` tries for each parallel dimension."""


def search_layouts(
    recipe_name: str,
    nodes: int | None = None,
    gpus_per_node: int | None = None,
    overrides: list[str] | None = None,
    top: int = 10,
    throughput: ThroughputTable | None = None,
    lengths: str | None = None,
) -> list[PlanResult]:
    """Layouts of the recipe that pass validation and fit in memory, best first (heuristic ranking).

    Tries every combination of :data:`SEARCH_SPACE` (TP within a node) with no, selective (the recipe's
    ``model.recompute_modules``) and full recompute. Ranking: no recompute first, then selective (cheap
    element-wise recompute), then full (a third more compute), then at least 10% memory headroom, then the
    smallest TP x CP x PP (least communication on the critical path), then the smallest EP, then the lowest
    memory. The step-time model does not distinguish layouts, so this ranks by what usually matters, not by a
    simulated step time.
    """
    base = load_recipe(recipe_name, overrides)
    gpn = gpus_per_node or plan_assumptions(base).gpus_per_node
    limit = plan_assumptions(base).gpu_memory_gib
    found = []
    order = {"none": 0, "selective": 1, "full": 2}
    for tp, cp, pp, ep, recompute in itertools.product(
        *(SEARCH_SPACE[k] for k in ("tensor", "context", "pipeline", "expert")), tuple(order)
    ):
        if tp > gpn:
            continue
        candidate = apply_overrides(
            base,
            [
                f"parallel.tensor={tp}",
                f"parallel.context={cp}",
                f"parallel.pipeline={pp}",
                f"parallel.expert={ep}",
                f"model.recompute={recompute}",
                "parallel.virtual_pipeline=null",
            ],
        )
        try:
            result = plan_recipe(candidate, recipe_name, nodes, gpn, throughput, lengths)
        except RecipeError:
            continue
        if not result.errors:
            tight = result.memory_gib_per_gpu > 0.9 * limit
            found.append((order[recompute], tight, tp * cp * pp, ep, result.memory_gib_per_gpu, result))
    found.sort(key=lambda item: item[:5])
    return [item[-1] for item in found[:top]]
