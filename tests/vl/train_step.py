"""One training step of the tiny Qwen2.5-VL through verl's ``ActorRolloutRefWorker.update_actor`` on the CPU, with
an image batch and the ``mhpo`` loss; run as ``python -m tests.vl.train_step OUT_JSON`` in a fresh process (the CPU
platform is process-wide).

The batch is laid out as verl's agent loop leaves it for the actor: jagged token tensors, Qwen2.5-VL's 4-row
positions (text row, then the model's own ``get_rope_index`` rows), the processor's ``pixel_values`` /
``image_grid_thw`` per sample in ``multi_modal_inputs``. ``use_remove_padding=False``: verl's padding-free Qwen2-VL
attention is flash-attention only (``verl/models/transformers/qwen2_vl.py``), which does not exist on a CPU.
The old log-probs are fixed numbers (a stale policy), so the ratio is far from 1 and the loss has gradient.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(out: str) -> None:
    import torch

    from mhpo_verl.cpu_backend import platform as platform_cpu

    platform_cpu.enable()
    platform_cpu.init_process_group()
    from tensordict import TensorDict
    from transformers import Qwen2_5_VLForConditionalGeneration
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine_workers import ActorRolloutRefWorker

    from mhpo_verl.demo.loop import DemoConfig, compose_verl_config
    from mhpo_verl.eval.vision import render_vision_prompt
    from tests.vl.tiny_vl import build_model, build_processor, png_bytes

    processor = build_processor()
    model_dir = build_model(Path(out).parent / "tiny_vl", processor)
    config = DemoConfig(
        model_path=str(model_dir), prompts_per_step=1, samples_per_prompt=2, ppo_mini_batch_size=1,
        micro_batch_size=2, train_dtype="fp32", lr=1e-2, overrides=["actor_rollout_ref.model.use_remove_padding=False"],
    )  # fmt: skip
    worker = ActorRolloutRefWorker(config=compose_verl_config(config, model_dir).actor_rollout_ref, role="actor")
    worker.init_model()
    before = {name: tensor.detach().clone() for name, tensor in worker.actor.engine.get_per_tensor_param()[0]}

    prompt = render_vision_prompt(
        processor, [{"role": "user", "content": "<image>Find x."}], [png_bytes(64, 48, (200, 0, 0))]
    )
    rope = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir).model
    columns: dict[str, list] = {key: [] for key in ("prompts", "responses", "input_ids", "attention_mask",
                                                    "position_ids", "response_mask", "loss_mask", "old_log_probs",
                                                    "advantages")}  # fmt: skip
    prompt_ids = torch.tensor(prompt.prompt_ids)
    for response_ids, advantage in (([100, 101, 102, 2], 1.0), ([103, 104, 2], -1.0)):
        response = torch.tensor(response_ids)
        sequence = torch.cat([prompt_ids, response])
        token_types = torch.zeros(1, len(sequence), dtype=torch.long)
        token_types[0, : len(prompt_ids)] = torch.tensor(prompt.multi_modal.token_inputs["mm_token_type_ids"])
        vision_rows, _ = rope.get_rope_index(
            sequence[None], image_grid_thw=prompt.multi_modal.image_inputs["image_grid_thw"],
            attention_mask=torch.ones(1, len(sequence), dtype=torch.long), mm_token_type_ids=token_types,
        )  # fmt: skip
        positions = torch.cat([torch.arange(len(sequence))[None], vision_rows[:, 0]])  # (4, seq): text, t, h, w
        for key, value in (
            ("prompts", prompt_ids), ("responses", response), ("input_ids", sequence),
            ("attention_mask", torch.ones_like(sequence)), ("position_ids", positions),
            ("response_mask", torch.ones_like(response)), ("loss_mask", torch.ones_like(response)),
            ("old_log_probs", torch.full((len(response),), -3.0)),
            ("advantages", torch.full((len(response),), advantage)),
        ):  # fmt: skip
            columns[key].append(value)
    batch = TensorDict(
        {key: torch.nested.as_nested_tensor(values, layout=torch.jagged) for key, values in columns.items()},
        batch_size=[2],
    )
    batch["multi_modal_inputs"] = [dict(prompt.multi_modal.image_inputs) for _ in range(2)]
    tu.maybe_fix_3d_position_ids(batch)
    tu.assign_non_tensor(batch, calculate_entropy=False, global_batch_size=2, mini_batch_size=2, epochs=1, seed=0,
                         dataloader_kwargs={"shuffle": False}, temperature=1.0)  # fmt: skip
    metrics = tu.get(worker.update_actor(batch), "metrics")
    after = dict(worker.actor.engine.get_per_tensor_param()[0])
    moved = sorted(name for name, tensor in after.items() if not torch.equal(tensor, before[name]))
    result = {
        "metrics": {key: [float(v) for v in values] for key, values in metrics.items() if isinstance(values, list)},
        "moved": moved,
        "n_parameters": len(after),
        "image_tokens": int((prompt_ids == processor.image_token_id).sum()),
    }
    Path(out).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
