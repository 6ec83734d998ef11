"""One rank of the data-parallel check: verl's actor worker, FSDP2 on gloo, two ``update_actor`` calls.

Run under torchrun (``python -m torch.distributed.run --standalone --nproc_per_node=N dp_update_rank.py MODEL OUT``).
Every rank builds the same global batch, keeps its own chunk of it, cut the way verl's dispatch cuts a batch for
the data-parallel workers (``BatchData.chunk``), and then does what the V1 trainer asks of the actor:

1. ``compute_log_prob`` on its chunk (the old log-probs, shifted by a fixed per-token offset so that the update
   starts off-policy and the MHPO modulator is not at its identity point);
2. ``update_actor`` with the ``mhpo`` loss and its default ``seq-mean-token-mean`` aggregation, fixed micro-batches
   of 2 sequences;
3. ``update_actor`` again on a second batch, with ``token-mean`` aggregation (global token count: the ranks hold
   different numbers of tokens), verl's dynamic (token-budget) micro-batching and 2 PPO epochs.

The optimizer is plain SGD, so each change of the weights is the (clipped) gradient itself: Adam's per-parameter
normalisation would hide a wrong gradient scale. Rank 0 saves the full weights before and after each update, the
reported gradient norms and the tokens each rank held, to ``OUT/dp<N>.pt``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from functools import partial
from pathlib import Path

SEQUENCES = 8
"""Global batch: 4 prompts x 2 responses, one PPO mini-batch."""
SAMPLES_PER_PROMPT = 2
LEARNING_RATE = 0.1
MODEL_INPUTS = ("prompts", "responses", "input_ids", "attention_mask", "position_ids", "response_mask", "loss_mask")


def make_batch(seed: int, vocab_size: int):
    """A fixed global batch: ragged prompts and responses of random tokens, per-sequence advantages and a per-token
    offset for the old log-probs, all as verl's V1 trainer stores them (jagged nested tensors)."""
    import torch

    from mhpo_verl.demo.loop import build_batch
    from mhpo_verl.demo.rollout import Rollout

    generator = torch.Generator().manual_seed(seed)

    def randint(low: int, high: int, size: int = 1) -> list[int]:
        return torch.randint(low, high, (size,), generator=generator).tolist()

    rollouts = []
    for row in range(SEQUENCES):
        prompt_length, response_length = randint(4, 24)[0], randint(2, 40)[0]
        rollouts.append(
            Rollout(
                prompt_index=row // SAMPLES_PER_PROMPT,
                prompt_ids=randint(4, vocab_size, prompt_length),
                response_ids=randint(4, vocab_size, response_length),
                truncated=False,
            )
        )
    batch = build_batch(rollouts, [0.0] * SEQUENCES, uids=[str(r.prompt_index) for r in rollouts])
    lengths = [len(r.response_ids) for r in rollouts]
    advantages = torch.randn(SEQUENCES, generator=generator)
    batch["advantages"] = torch.nested.as_nested_tensor(
        [torch.full((n,), float(a)) for n, a in zip(lengths, advantages)], layout=torch.jagged
    )
    batch["log_prob_offset"] = torch.nested.as_nested_tensor(
        [0.3 * torch.randn(n, generator=generator) for n in lengths], layout=torch.jagged
    )
    return batch


def main(model_path: str, out_dir: str) -> None:
    from mhpo_verl import platform_cpu

    platform_cpu.enable()  # before verl's engine package is imported
    platform_cpu.init_process_group()  # torchrun's RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT

    import torch
    from transformers import AutoConfig
    from verl.protocol import BatchData
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine_workers import ActorRolloutRefWorker
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import response_from_nested

    from mhpo_verl.demo.loop import DemoConfig, compose_verl_config

    rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    config = DemoConfig(
        prompts_per_step=SEQUENCES // SAMPLES_PER_PROMPT,
        samples_per_prompt=SAMPLES_PER_PROMPT,
        ppo_mini_batch_size=SEQUENCES // SAMPLES_PER_PROMPT,
        micro_batch_size=2,
        lr=LEARNING_RATE,
        train_dtype="fp32",
        model_path=model_path,
        overrides=(
            "actor_rollout_ref.actor.optim.optimizer=SGD",
            "actor_rollout_ref.actor.optim.weight_decay=0.0",
            "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=64",
        ),
    )
    verl_config = compose_verl_config(config, Path(model_path))
    worker = ActorRolloutRefWorker(config=verl_config.actor_rollout_ref, role="actor")
    worker.init_model()
    actor_config = worker.loss_fn.keywords["config"]
    assert actor_config.policy_loss.loss_mode == "mhpo" and actor_config.loss_agg_mode == "seq-mean-token-mean"
    vocab_size = AutoConfig.from_pretrained(model_path).vocab_size

    def weights() -> dict[str, torch.Tensor]:
        named, _ = worker.actor.engine.get_per_tensor_param()  # a collective: every rank takes part
        return {name: tensor.detach().clone() for name, tensor in named}

    def local_chunk(seed: int):
        batch = make_batch(seed, vocab_size)
        return BatchData(batch).chunk(chunks=world_size)[rank]  # what verl's dispatch hands this rank

    def update(chunk, **options) -> dict:
        request = chunk.select(*MODEL_INPUTS)
        tu.assign_non_tensor(request, calculate_entropy=False, compute_loss=False, temperature=1.0)
        log_probs = response_from_nested(worker.compute_log_prob(request)["log_probs"], chunk["response_mask"])
        offset = chunk["log_prob_offset"]
        assert torch.equal(log_probs.offsets(), offset.offsets())
        request = chunk.select(*MODEL_INPUTS, "advantages").unlock_()  # verl's chunks come locked
        request["old_log_probs"] = torch.nested.nested_tensor_from_jagged(
            log_probs.values() + offset.values(), offsets=log_probs.offsets()
        )
        tu.assign_non_tensor(
            request,
            calculate_entropy=False,
            global_batch_size=SEQUENCES,
            mini_batch_size=SEQUENCES,
            seed=0,
            dataloader_kwargs={"shuffle": False},
            temperature=1.0,
            **options,
        )
        metrics = tu.get(worker.update_actor(request), "metrics")
        return {"grad_norm": [float(value) for value in metrics["grad_norm"]]}

    def tokens_per_rank(chunk) -> list[int]:
        local = int(chunk["response_mask"].values().sum())
        gathered = [None] * world_size
        torch.distributed.all_gather_object(gathered, local)
        return gathered

    snapshots = [weights()]
    first = local_chunk(seed=1)
    reports = [{**update(first, epochs=1), "tokens_per_rank": tokens_per_rank(first)}]
    snapshots.append(weights())

    worker.set_loss_fn(partial(ppo_loss, config=dataclasses.replace(actor_config, loss_agg_mode="token-mean")))
    second = local_chunk(seed=2)
    dynamic = {"use_dynamic_bsz": True, "max_token_len_per_gpu": 64}
    reports.append({**update(second, epochs=2, **dynamic), "tokens_per_rank": tokens_per_rank(second)})
    snapshots.append(weights())

    if rank == 0:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        torch.save({"weights": snapshots, "reports": reports}, Path(out_dir) / f"dp{world_size}.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main(*sys.argv[1:3])
