"""``megatron-agentic plan``: validate a parallel layout and estimate memory, step time and GPU-hours.

Modules: :mod:`.layout` (the parallel layout planned), :mod:`.memory` (parameters, activations and memory per GPU),
:mod:`.time` (FLOPs, measured throughput, MFU), :mod:`.plan` (one recipe's plan), :mod:`.search` (layouts that
fit), :mod:`.report` (tables) and :mod:`.cli` (``megatron-agentic plan``). Model-specific formulas (parameter
breakdown, activation components) come from the model family of the recipe's preset
(:mod:`megatron_agentic.models.registry`).

The estimates follow megatron-core's sharding rules for a Qwen3-style ``GPTModel`` (Qwen3-MoE shown):

* **Parameters per GPU.** Attention, embedding and output layers are split over tensor parallelism (TP);
  norms and the router are replicated; experts are split over expert parallelism (EP) and expert-tensor
  parallelism (ETP, megatron-core's default: ETP = TP); layers over pipeline stages (PP). The first stage
  holds the embedding, the last the output layer and final norm.
* **Weights, gradients, optimizer.** bf16 weights (2 B), fp32 gradient buffers (4 B), and with the
  distributed optimizer fp32 master weights + Adam moments (12 B) sharded over the data-parallel group
  (DP x CP for dense parameters, the expert-data-parallel group world / (ETP x EP x PP) for experts).
  fp32 training keeps no master copy (8 B of moments).
* **Activations** (bytes per token per layer, flash attention, sequence parallelism dividing the
  token-sharded tensors by TP, context parallelism dividing tokens by CP): norms and residuals
  ``3 h``, query/key/value through QK-norm and RoPE plus the attention output ``d (4 n_q + 4 n_kv)``,
  softmax statistics ``4 n_q`` (fp32), router logits/probabilities ``8 E`` (fp32), and ``k x ETP``
  routed copies of each token through the experts ``2 h + 3 f / ETP``. The unfused ``local`` attention
  backend adds the ``n_q s^2`` score and probability matrices. Full recompute keeps only each layer's input
  plus one layer's working set. With 1F1B the first stage holds ``PP`` micro-batches in flight
  (interleaved: ``L (1 + (PP-1)/(PP V))`` layers' worth), the last stage adds the logits
  (bf16 plus the fp32 copy of the vocabulary-parallel cross entropy).
* **Time.** Model FLOPs per token ``6 (N_active - N_embedding) + 6 L s n_q d`` (causal attention), at the
  recipe's assumed MFU of the GPU's dense bf16 peak. With ``data.document_attention`` the attended length
  (``sum piece^2 / tokens`` from the data's document-length histograms, :mod:`megatron_agentic.attention_cost`)
  replaces ``s``, and CP padding of every document adds tokens; the full-sequence figures are kept alongside.

These are estimates (typically within ~15% of measured peaks); the unit tests check the parameter
counts against megatron-core's own modules. ``plan`` rejects layouts whose estimate exceeds the GPU memory.
"""
