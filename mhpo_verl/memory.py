"""Per-GPU memory of a composed verl run, estimated from the model's shape and the parallel layout.

A rough, stated method (not a measurement; nothing here has run on a GPU), meant to catch layouts that cannot fit:

* **parameters, gradients, optimizer** per GPU. FSDP shards all three over every training GPU: fp32 parameters
  (4 bytes), fp32 gradients (4) and Adam's two fp32 moments (8). Megatron keeps bf16 parameters (2) and fp32 main
  gradients (4, verl's ``grad_reduce_in_fp32``) on each model-parallel rank (dense weights split by TP x PP, expert
  weights by EP x ETP x PP), and the distributed optimizer shards fp32 master weights + moments (12) over the
  data-parallel ranks. Offloaded parts count 0. A reference model (only with a KL term) adds bf16 weights.
* **activations at the token budget** (``ppo_max_token_len_per_gpu`` tokens per GPU: verl multiplies the budget by
  the CP or Ulysses size and splits the micro-batch over those ranks, so the per-GPU tokens are the budget). Per
  token and layer, bf16: attention keeps its input, normed input, Q, K, V, output and projection input
  (2h + 3q + 2kv values), a SwiGLU MLP its input, normed input, gate, up, activation and product (2h + 4f), an MoE
  layer the routed copies and the experts' intermediates (2h + k(h + 4f_moe)); Megatron TP with sequence parallel
  splits them over TP. With recompute (FSDP gradient checkpointing, Megatron full/uniform/1) only each layer's
  input (h) stays, plus one layer's full set during its backward. A pipeline's first stage holds PP micro-batches
  (1F1B). FSDP adds the bf16 unsharded layer in use and the one prefetched. The logits add tokens x vocab / TP
  x 10 bytes (bf16 logits, fp32 log-softmax and its gradient).
* **vLLM**: ``gpu_memory_utilization`` x the GPU while it generates (verl puts it to sleep for the update, so it is
  counted in the rollout phase only); beside it stays whatever of the actor (and reference) is not offloaded.
* a fixed 4 GB for the CUDA context, NCCL buffers and allocator slack.

The estimate is the larger of the training phase and the rollout phase. The asynchronous modes put vLLM on GPUs of
its own: trainer GPUs have no vLLM share, rollout GPUs only vLLM's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mhpo_verl.recipes import Architecture

GB = 1e9
OVERHEAD_GB = 4.0
LOGIT_BYTES = 10


@dataclass(frozen=True)
class ParameterCounts:
    """Parameters of the whole model: per-layer dense (attention, norms, dense MLP), per-layer expert, embeddings."""

    dense_per_layer: float
    experts_per_layer: float
    embeddings: float

    def total(self, layers: int) -> float:
        return layers * (self.dense_per_layer + self.experts_per_layer) + self.embeddings


def parameter_counts(arch: Architecture) -> ParameterCounts:
    h, heads = arch.hidden_size, arch.num_attention_heads
    head_dim = arch.head_dim or h // heads
    q, kv = heads * head_dim, arch.num_kv_heads * head_dim
    attention = h * q + 2 * h * kv + q * h + (q + 2 * kv if arch.attention_bias else 0)
    norms = 2 * h
    if arch.num_experts:
        mlp, experts = h * arch.num_experts, arch.num_experts * 3 * h * arch.moe_intermediate_size  # router; experts
    else:
        mlp, experts = 3 * h * arch.intermediate_size, 0
    embeddings = arch.vocab_size * h * (1 if arch.tie_word_embeddings else 2) + arch.vision_parameters
    return ParameterCounts(dense_per_layer=attention + norms + mlp, experts_per_layer=experts, embeddings=embeddings)


def activation_values_per_token_layer(arch: Architecture) -> int:
    """bf16 values one layer keeps per token for its backward pass, without recompute (see the module doc)."""
    h = arch.hidden_size
    head_dim = arch.head_dim or h // arch.num_attention_heads
    q, kv = arch.num_attention_heads * head_dim, arch.num_kv_heads * head_dim
    attention = 2 * h + 3 * q + 2 * kv
    if arch.num_experts:
        mlp = 2 * h + arch.experts_per_token * (h + 4 * arch.moe_intermediate_size)
    else:
        mlp = 2 * h + 4 * arch.intermediate_size
    return attention + mlp


@dataclass(frozen=True)
class MemoryEstimate:
    """GB per GPU, by part; ``training`` and ``rollout`` are the two phases' totals (overhead included)."""

    params: float
    grads: float
    optimizer: float
    reference: float
    activations: float
    logits: float
    vllm: float
    overhead: float
    rollout_gpu_vllm: float = 0.0
    """Asynchronous modes: what one rollout GPU holds (vLLM's share and the overhead); 0 in the sync mode."""

    @property
    def resident(self) -> float:
        return self.params + self.grads + self.optimizer + self.reference

    @property
    def training(self) -> float:
        return self.resident + self.activations + self.logits + self.overhead

    @property
    def rollout(self) -> float:
        return self.resident + self.vllm + self.overhead if self.vllm else 0.0

    @property
    def peak(self) -> float:
        return max(self.training, self.rollout, self.rollout_gpu_vllm)

    def summary(self) -> str:
        parts = (
            f"params {self.params:.1f} + grads {self.grads:.1f} + optimizer {self.optimizer:.1f}"
            f"{f' + reference {self.reference:.1f}' if self.reference else ''} GB resident; training adds "
            f"activations {self.activations:.1f} + logits {self.logits:.1f} -> {self.training:.1f} GB"
        )
        if self.vllm:
            parts += f"; rollout adds vLLM {self.vllm:.1f} -> {self.rollout:.1f} GB"
        if self.rollout_gpu_vllm:
            parts += f"; each rollout GPU: vLLM + overhead {self.rollout_gpu_vllm:.1f} GB"
        return f"~{self.peak:.0f} GB per GPU ({parts}; {self.overhead:.0f} GB overhead)"


def estimate(config: Any, arch: Architecture, gpu_memory_gb: float, uses_reference: bool) -> MemoryEstimate:
    """The estimate for a composed verl ``config`` (every size read from it, so overrides count)."""
    actor = config.actor_rollout_ref.actor
    rollout = config.actor_rollout_ref.rollout
    world = int(config.trainer.nnodes) * int(config.trainer.n_gpus_per_node)
    counts = parameter_counts(arch)
    layers = arch.num_layers
    tokens = int(actor.ppo_max_token_len_per_gpu)
    per_layer = activation_values_per_token_layer(arch)
    recompute_layers_kept = 1  # one layer's full set while it is recomputed
    if actor.strategy == "megatron":
        m = actor.megatron
        tp, pp, ep = m.tensor_model_parallel_size, m.pipeline_model_parallel_size, m.expert_model_parallel_size
        etp = m.expert_tensor_parallel_size or tp
        dp = max(world // (tp * pp * m.context_parallel_size), 1)
        expert_dp = max(world // (etp * ep * pp), 1)
        stage_layers = layers / pp
        dense = stage_layers * counts.dense_per_layer / tp + counts.embeddings / tp / (1 if pp == 1 else 2)
        experts = stage_layers * counts.experts_per_layer / (ep * etp)
        local = dense + experts
        params = 2 * local
        grads = 4 * local
        optimizer = 12 * (dense / dp + experts / expert_dp)
        if m.param_offload:
            params = grads = 0.0
        if m.optimizer_offload:
            optimizer = 0.0
        recompute = m.override_transformer_config.get("recompute_granularity") == "full"
        split = tp if (m.sequence_parallel and tp > 1) else 1
        in_flight = pp  # 1F1B: the first stage holds PP micro-batches' activations
        if recompute:
            kept = 2 * arch.hidden_size * stage_layers * in_flight + 2 * per_layer * recompute_layers_kept
        else:
            kept = 2 * per_layer * stage_layers * in_flight
        activations = tokens * kept / split
        logits = tokens * arch.vocab_size / tp * LOGIT_BYTES
        reference = 2 * local if uses_reference and not config.actor_rollout_ref.ref.megatron.param_offload else 0.0
    else:
        total = counts.total(layers)
        offload = actor.fsdp_config.param_offload
        params = 0.0 if offload else 4 * total / world
        grads = 0.0 if offload else 4 * total / world
        optimizer = 0.0 if actor.fsdp_config.optimizer_offload else 8 * total / world
        gathered = 2 * 2 * (counts.dense_per_layer + counts.experts_per_layer)  # bf16 layer being used + prefetched
        if config.actor_rollout_ref.model.enable_gradient_checkpointing:
            kept = 2 * arch.hidden_size * layers + 2 * per_layer * recompute_layers_kept
        else:
            kept = 2 * per_layer * layers
        activations = tokens * kept + gathered
        logits = tokens * arch.vocab_size * LOGIT_BYTES
        ref_offload = config.actor_rollout_ref.ref.fsdp_config.param_offload
        reference = 2 * total / world if uses_reference and not ref_offload else 0.0
    vllm_share = float(rollout.gpu_memory_utilization) * gpu_memory_gb
    separate_rollout = not config.actor_rollout_ref.hybrid_engine
    return MemoryEstimate(
        params=params / GB,
        grads=grads / GB,
        optimizer=optimizer / GB,
        reference=reference / GB,
        activations=activations / GB,
        logits=logits / GB,
        vllm=0.0 if separate_rollout else vllm_share,
        overhead=OVERHEAD_GB,
        rollout_gpu_vllm=vllm_share + OVERHEAD_GB if separate_rollout else 0.0,
    )


def can_estimate(arch: Architecture | None) -> bool:
    return (
        arch is not None
        and bool(arch.hidden_size and arch.vocab_size)
        and bool(arch.moe_intermediate_size if arch.num_experts else arch.intermediate_size)
    )
