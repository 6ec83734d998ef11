"""One training scenario through verl's own actor worker, in one process of a (torchrun) gloo group.

``python scenario.py SETTINGS_JSON`` (or under ``torchrun --nproc-per-node N``). SETTINGS: ``engine`` (``fsdp`` /
``megatron``), ``model`` (folder), ``out`` (folder), ``lr``, optional ``tp``, ``pp``, ``remove_padding``,
``checkpoint``.

Every scenario builds the demo's :class:`~mhpo_verl.demo.loop.CPURLTrainer` on the same fixed batch (4 sequences,
2 groups, micro-batches of 1) and writes, from rank 0, ``result.json`` and ``weights.pt``:

* ``old_log_probs`` from the engine (``compute_log_prob``) and ``hf_log_probs`` from a plain transformers forward
  of the same bf16 weights, all sequences (each rank computes its data-parallel shard);
* the ``mhpo`` loss calls of each rank (wrapped in verl's registry, so counted where ``ppo_loss`` calls it);
* the update's reduced metrics, against old log-probs that are the same in every scenario (an fp32 transformers
  forward, shifted by a fixed pattern so that the ratio is not 1 and the loss not 0);
* the weights after one ``update_actor`` (``get_per_tensor_param``, HF names) as fp32;
* with ``checkpoint``: the weights after saving, updating again and loading verl's checkpoint back.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch


def fixed_rollouts() -> list:
    from mhpo_verl.demo.rollout import Rollout

    generator = torch.Generator().manual_seed(1234)
    rollouts = []
    for index in range(4):
        prompt_length = int(torch.randint(3, 9, (1,), generator=generator))
        response_length = int(torch.randint(2, 10, (1,), generator=generator))
        prompt = torch.randint(4, 64, (prompt_length,), generator=generator).tolist()
        response = torch.randint(4, 64, (response_length,), generator=generator).tolist()
        rollouts.append(Rollout(prompt_index=index // 2, prompt_ids=prompt, response_ids=response, truncated=False))
    return rollouts


def hf_log_probs(model_dir: str, rollouts: list, dtype: torch.dtype, unmasked_packing: bool = False) -> list:
    """Log-probs of each response token under a plain transformers forward (no verl, no Megatron).

    ``unmasked_packing`` is the negative control: all sequences in one row with no mask between them (what packed
    sequences would compute if the block-diagonal mask were missing), each sequence at its own positions.
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    sequences = [rollout.prompt_ids + rollout.response_ids for rollout in rollouts]
    with torch.no_grad():
        if unmasked_packing:
            ids = torch.tensor([[token for sequence in sequences for token in sequence]])
            positions = torch.cat([torch.arange(len(sequence)) for sequence in sequences])[None]
            packed_logits = model(ids, position_ids=positions).logits[0].float()
            logits = list(packed_logits.split([len(sequence) for sequence in sequences]))
        else:
            logits = [model(torch.tensor([sequence])).logits[0].float() for sequence in sequences]
    result = []
    for rollout, sequence, sequence_logits in zip(rollouts, sequences, logits):
        ids = torch.tensor(sequence)
        token_log_probs = torch.log_softmax(sequence_logits[:-1], dim=-1).gather(-1, ids[1:, None])[:, 0]
        result.append(token_log_probs[len(rollout.prompt_ids) - 1 :].tolist())
    return result


def count_loss_calls(sink: list) -> None:
    """Record every call of the registered mhpo policy loss (verl's ppo_loss looks it up by name per call)."""
    from verl.trainer.ppo import core_algos

    registered = core_algos.POLICY_LOSS_REGISTRY["mhpo"]

    def counted(old_log_prob, log_prob, advantages, response_mask, *args, **kwargs):
        mask = response_mask.bool()
        sink.append(
            {
                "sequences": int(response_mask.shape[0]),
                "tokens": int(mask.sum().item()),
                # what the loss sees on the response tokens: the engine's log-probs and the batch's inputs
                "log_prob": log_prob.detach()[mask].float().tolist(),
                "old_log_prob": old_log_prob[mask].float().tolist(),
                "advantages": advantages[mask].float().tolist(),
            }
        )
        return registered(old_log_prob, log_prob, advantages, response_mask, *args, **kwargs)

    core_algos.POLICY_LOSS_REGISTRY["mhpo"] = counted


def main(settings: dict) -> None:
    from mhpo_verl.cpu_backend import megatron as megatron_cpu
    from mhpo_verl.cpu_backend import platform as platform_cpu

    engine_name, tp, pp = settings["engine"], settings.get("tp", 1), settings.get("pp", 1)
    if engine_name == "megatron":
        megatron_cpu.enable()
    else:
        platform_cpu.enable()
    platform_cpu.init_process_group()
    torch.set_num_threads(1)

    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import response_from_nested

    from mhpo_verl.demo.loop import CPURLTrainer, DemoConfig, build_batch

    actor = "actor_rollout_ref.actor"
    world = torch.distributed.get_world_size()
    overrides = [
        f"actor_rollout_ref.model.use_remove_padding={settings.get('remove_padding', True)}",
        f"trainer.n_gpus_per_node={world}",
        f"{actor}.optim.weight_decay=0.0",
        f"{actor}.shuffle=False",
    ]
    if engine_name == "megatron":
        overrides += [
            f"{actor}.megatron.tensor_model_parallel_size={tp}",
            f"{actor}.megatron.pipeline_model_parallel_size={pp}",
        ]
    config = DemoConfig(
        steps=1, prompts_per_step=2, samples_per_prompt=2, ppo_mini_batch_size=2, micro_batch_size=1, lr=settings["lr"],
        engine=engine_name, model_path=settings["model"], overrides=tuple(overrides),
    )  # fmt: skip
    loss_calls: list[dict] = []
    count_loss_calls(loss_calls)
    trainer = CPURLTrainer(config, score_fn=lambda texts, answers: [])
    engine = trainer.engine
    update = trainer.worker.update_actor

    def update_on_every_rank(request):  # under TP/PP verl returns outputs on the model-parallel source rank only
        output = update(request)
        return output if output is not None else tu.get_tensordict({}, non_tensor_dict={"metrics": {}})

    trainer.worker.update_actor = update_on_every_rank
    dp_rank, dp_size = engine.get_data_parallel_rank(), engine.get_data_parallel_size()

    rollouts = fixed_rollouts()
    batch = build_batch(rollouts, [1.0, 0.0, 0.0, 1.0], uids=["a", "a", "b", "b"])
    trainer.compute_advantage(batch)  # the mhpo estimator over whole groups, before the data-parallel split
    per_rank = len(rollouts) // dp_size
    mine = list(range(dp_rank * per_rank, (dp_rank + 1) * per_rank))
    shard = tu.index_select_tensor_dict(batch, mine)

    # Old log-probs from the engine. Under TP/PP only the model-parallel source rank returns outputs (as in verl):
    # every rank takes its data-parallel shard's result from whichever rank has it.
    request = shard.select("prompts", "responses", "input_ids", "attention_mask", "position_ids", "response_mask",
                           "loss_mask")  # fmt: skip
    tu.assign_non_tensor(request, calculate_entropy=False, compute_loss=False, temperature=1.0)
    output = trainer.worker.compute_log_prob(request)
    local = None
    if output is not None and output.get("log_probs", None) is not None:
        local = [row.tolist() for row in response_from_nested(output["log_probs"], shard["response_mask"]).unbind()]
    everyone: list = [None] * world
    torch.distributed.all_gather_object(everyone, (dp_rank, local))
    engine_log_probs: list[list[float]] = []
    for rank in range(dp_size):
        engine_log_probs += next(lp for d, lp in everyone if d == rank and lp is not None)

    # The update, against old log-probs shared by every scenario.
    reference = hf_log_probs(settings["model"], rollouts, torch.float32)
    shifted = [
        [value - 0.2 * math.sin(1.0 + 7 * i + j) for j, value in enumerate(row)] for i, row in enumerate(reference)
    ]
    old = torch.nested.as_nested_tensor([torch.tensor(row) for row in shifted], layout=torch.jagged)
    batch["old_log_probs"] = old
    shard = tu.index_select_tensor_dict(batch, mine)
    loss_calls.clear()
    metrics = trainer.update_actor(shard)
    update_calls = list(loss_calls)
    weights = {name: tensor.detach().float().clone() for name, tensor in engine.get_per_tensor_param()[0]}

    restored = None
    if settings.get("checkpoint"):
        checkpoint = Path(settings["out"]) / "checkpoint"
        trainer.worker.save_checkpoint(str(checkpoint), global_step=1)
        trainer.update_actor(shard)  # moves the weights on
        moved = {name: tensor.detach().float().clone() for name, tensor in engine.get_per_tensor_param()[0]}
        trainer.worker.load_checkpoint(str(checkpoint))
        restored = {name: tensor.detach().float().clone() for name, tensor in engine.get_per_tensor_param()[0]}
        restored = {"restored": restored, "moved": moved}

    all_calls: list = [None] * world
    torch.distributed.all_gather_object(all_calls, update_calls)
    all_metrics: list = [None] * world
    torch.distributed.all_gather_object(all_metrics, metrics)
    if torch.distributed.get_rank() == 0:
        out = Path(settings["out"])
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"weights": weights, "checkpoint": restored}, out / "weights.pt")
        result = {
            "engine": engine.__class__.__name__,
            "dp_size": dp_size,
            "old_log_probs": engine_log_probs,
            "hf_log_probs": hf_log_probs(settings["model"], rollouts, torch.bfloat16),
            "hf_log_probs_unmasked_packing": hf_log_probs(settings["model"], rollouts, torch.bfloat16, True),
            "loss_calls_per_rank": all_calls,
            "metrics": next(m for m in all_metrics if m),
        }
        (out / "result.json").write_text(json.dumps(result))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
