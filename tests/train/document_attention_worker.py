"""Subprocess helper for ``test_document_attention.py``: token loss and gradients of tiny-moe on real packed samples.

``python tests/train/document_attention_worker.py --prefix P --out FILE --state STATE --mode dense|packed|both
[--cache DIR]`` (under ``torch.distributed.run`` for CP > 1, ``--cp N``) reads the first global batch of
megatron-core's ``GPTDataset`` over the indexed dataset ``P`` (project's ``build_datasets``), runs forward and
backward of every micro-batch (gradients accumulated) and saves ``{mode: {"loss_sum", "tokens", "grads",
"documents"}}`` to ``FILE`` (rank 0; gradients and sums reduced over the CP ranks):

* ``dense``: megatron-core's ``reset_attention_mask`` path: the ``[b, 1, s, s]`` document mask built by
  ``GPTDataset``, megatron-core's local ``DotProductAttention`` (CP=1 only). Saves its initial weights to ``STATE``.
* ``causal`` (with ``both``): plain causal attention over the whole sample (documents see each other).
* ``packed``: ``data.document_attention``: ``pack_documents`` / ``PackedSeqParams`` (``thd``), the attention backend
  the settings function picks (Triton/torch ``thd``, the per-document ring at CP > 1), weights from ``STATE``.
"""

from __future__ import annotations

import argparse

SEQ, MBS, GBS, EOD, VOCAB = 64, 2, 4, 1, 512


def overrides(prefix: str, cache: str, cp: int, mode: str) -> list[str]:
    """Config of one path (the two differ only in how documents are kept apart)."""
    common = [
        "model.preset=tiny-moe",
        f"model.vocab_size={VOCAB}",
        "model.moe_aux_loss_coeff=0.0",  # compare the token loss only (the aux loss is per-rank with CP)
        f"parallel.context={cp}",
        f"train.seq_length={SEQ}",
        f"train.micro_batch_size={MBS}",
        f"train.global_batch_size={GBS}",
        "train.precision=fp32",
        f"data.blend=[{prefix}]",
        "data.split=100,0,0",
        "data.tokenizer=custom",
        f"data.eod_token_id={EOD}",
        f"data.cache_dir={cache}",
    ]
    if mode == "packed":
        return [*common, "data.document_attention=true"]
    if mode == "causal":  # documents attend to each other (what the recipes did before): must differ
        return common
    return [*common, "data.reset_attention_mask=true", "data.reset_position_ids=true"]


def run(mode: str, args: argparse.Namespace, model_state: dict | None) -> tuple[dict, dict]:
    """Forward/backward of the first global batch in ``mode``; returns the result and the model's state dict."""
    import torch
    from megatron.core import parallel_state

    from megatron_agentic.config import load_config
    from megatron_agentic.loaders.torch_loader import MicroBatchLoader
    from megatron_agentic.models.qwen3_moe.model import build_model
    from megatron_agentic.training.data import build_datasets, dataset_eod
    from megatron_agentic.training.packing import micro_batch_documents, prepare_document_batches

    packed = mode == "packed"
    cfg = load_config(None, overrides(args.prefix, args.cache, args.cp, mode))
    cfg.validate(args.cp)
    settings = cfg.effective_settings()
    datasets = build_datasets(cfg, GBS, 0)
    loader = MicroBatchLoader(datasets.train, MBS, GBS, dp_rank=0, dp_size=1)
    batches = list(loader.iteration_batches(0))
    model = build_model(cfg, settings=settings)
    if model_state is not None:
        model.load_state_dict(model_state, strict=True)
    # tensors cloned; other entries (the norms' TE ``_extra_state``, None on CPU) kept as they are
    state = {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in model.state_dict().items()}
    cp_rank = parallel_state.get_context_parallel_rank()
    if packed:
        prepared, _ = prepare_document_batches(batches, dataset_eod(cfg), cp_rank, args.cp)
        assert all(b["attention_mask"] is None for b in prepared)
    else:
        assert args.cp == 1 and all((b["attention_mask"] is not None) == (mode == "dense") for b in batches)
        prepared = batches
    loss_sum = torch.zeros((), dtype=torch.float64)
    tokens = torch.zeros((), dtype=torch.float64)
    for batch in prepared:
        out = model(
            batch["tokens"],
            batch["position_ids"],
            batch["attention_mask"],
            labels=batch["labels"],
            packed_seq_params=batch.get("packed_seq_params"),
        )
        mask = batch["loss_mask"].float()
        loss = (out.float() * mask).sum()
        loss.backward()
        loss_sum += loss.detach().double()
        tokens += mask.sum().double()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    if args.cp > 1:
        group = parallel_state.get_context_parallel_group()
        for g in [loss_sum, tokens, *grads.values()]:
            torch.distributed.all_reduce(g, group=group)
    documents = [micro_batch_documents(b["tokens"], dataset_eod(cfg)) for b in batches]
    result = {
        "loss_sum": float(loss_sum),
        "tokens": float(tokens),
        "grads": grads,
        "documents": documents,
        "ends_with_eod": [bool(row[-1] == dataset_eod(cfg)) for b in batches for row in b["tokens"]],
        "attention_backend": settings.attention_backend,
        "attention_mode": settings.attention_mode,
    }
    return result, state


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--mode", choices=("dense", "packed", "both"), required=True)
    parser.add_argument("--cp", type=int, default=1)
    args = parser.parse_args()

    import torch

    from megatron_agentic.config import load_config
    from megatron_agentic.platform import setup_platform
    from megatron_agentic.training.builders import init_distributed

    platform = setup_platform()
    init_distributed(load_config(None, overrides(args.prefix, args.cache, args.cp, "packed")), platform)
    results = {}
    state = None
    if args.mode in ("dense", "both"):
        results["dense"], state = run("dense", args, None)
        torch.save(state, args.state)
    if args.mode in ("packed", "both"):
        state = torch.load(args.state) if state is None else state
        results["packed"], _ = run("packed", args, state)
    if args.mode == "both":
        results["causal"], _ = run("causal", args, state)
    if torch.distributed.get_rank() == 0:
        torch.save(results, args.out)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
