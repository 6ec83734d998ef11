"""A CPU rollout backend for verl's own trainer: transformers ``generate`` behind verl's rollout-replica interface.

verl 0.9's V1 trainer generates through rollout *replicas* (one server actor each, reached by the agent loop with
``server.generate(prompt_ids, sampling_params, request_id) -> TokenOutput``) and pushes new weights through a
``BaseRollout`` adapter that lives in the training worker. It ships vLLM / SGLang / TensorRT-LLM backends only. This
module registers a fourth, ``hf``, so that ``actor_rollout_ref.rollout.name=hf`` runs ``main_ppo`` on a CPU:

* :class:`HFRolloutServer` (a Ray actor) holds a transformers copy of the policy and answers ``generate`` requests;
  concurrent requests with the same sampling settings are batched into one ``generate`` call;
* :class:`HFReplica` starts one server per replica (hybrid mode: next to the training worker);
* :class:`HFServerAdapter` is the worker-side ``BaseRollout``: verl's naive weight sync hands it the engine's
  full tensors, which it sends to the server through Ray's object store.

Importing the module registers the backend; processes find it through ``VERL_USE_EXTERNAL_MODULES``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Generator
from typing import Any

import ray
import torch
from verl.workers.rollout.base import _ROLLOUT_REGISTRY, BaseRollout
from verl.workers.rollout.replica import RolloutReplica, RolloutReplicaRegistry, TokenOutput

__all__ = [
    "BACKEND_NAME",
    "BATCH_WINDOW_S",
    "HFReplica",
    "HFRolloutServer",
    "HFServerAdapter",
    "register",
    "server_name",
]

logger = logging.getLogger(__name__)

BACKEND_NAME = "hf"
"""``actor_rollout_ref.rollout.name`` of this backend."""

BATCH_WINDOW_S = 0.05
"""How long the server waits for more requests before it starts a batch."""


def server_name(replica_rank: int) -> str:
    return f"mhpo_hf_rollout_server_{replica_rank}"


class HFRolloutServer:
    """Token-in, token-out generation with transformers, batched over concurrent requests."""

    def __init__(self, model_path: str, replica_rank: int, response_length: int, dtype: str = "bfloat16"):
        from transformers import AutoTokenizer

        from mhpo_verl.demo.rollout import HFSampler

        tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.sampler = HFSampler(
            model_path,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            dtype=getattr(torch, dtype),
        )
        self.replica_rank = replica_rank
        self.response_length = response_length
        # The trainer step whose weights this server holds; verl's staleness metrics read it from every output.
        self.global_steps: int | None = None
        self.queue: asyncio.Queue | None = None
        self.serving: asyncio.Task | None = None
        self.batches = 0

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: Any = None,
        video_data: Any = None,
        **unused: Any,
    ) -> TokenOutput:
        if image_data is not None or video_data is not None:
            raise ValueError("the hf CPU rollout serves text only; got image/video data")
        if self.serving is None or self.serving.done():  # first request, or the event loop that served ended
            self.queue = asyncio.Queue()
            self.serving = asyncio.get_running_loop().create_task(self._serve())
        settings = _settings(sampling_params, self.response_length)  # a bad request fails alone, here
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((list(prompt_ids), settings, future))
        return await future

    async def _serve(self) -> None:
        while True:
            requests = [await self.queue.get()]
            await asyncio.sleep(BATCH_WINDOW_S)
            while not self.queue.empty():
                requests.append(self.queue.get_nowait())
            by_settings: dict[tuple, list] = {}
            for request in requests:
                by_settings.setdefault(request[1], []).append(request)
            for settings, group in by_settings.items():
                try:
                    outputs = await asyncio.to_thread(self._generate_batch, settings, [r[0] for r in group])
                except Exception as error:  # every waiting request must learn about the failure
                    for _, _, future in group:
                        future.set_exception(error)
                    continue
                for (_, _, future), output in zip(group, outputs):
                    future.set_result(output)

    def _generate_batch(self, settings: tuple, prompts: list[list[int]]) -> list[TokenOutput]:
        temperature, top_p, max_tokens = settings
        self.batches += 1
        rollouts = self.sampler.sample(
            prompts, n=1, max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=self.batches
        )
        return [
            TokenOutput(
                token_ids=r.response_ids,
                stop_reason="completed",
                extra_fields={"global_steps": self.global_steps},
            )
            for r in rollouts
        ]

    def load_weights(self, weights: dict[str, torch.Tensor], global_steps: int | None = None) -> int:
        count = self.sampler.load_weights(weights.items())
        if global_steps is not None:
            self.global_steps = global_steps
        return count

    # verl's replica control surface; a CPU copy has no device memory to free or KV cache to manage.
    async def wake_up(self) -> None: ...
    async def sleep(self) -> None: ...
    async def clear_kv_cache(self) -> None: ...
    async def release_kv_cache(self) -> None: ...
    async def resume_kv_cache(self) -> None: ...
    async def abort_all_requests(self, reject_request: bool = False) -> dict:
        return {}

    async def resume_generation(self) -> None: ...
    async def start_profile(self, **kwargs: Any) -> None: ...
    async def stop_profile(self) -> None: ...


def _settings(sampling_params: dict[str, Any], response_length: int) -> tuple[float, float, int]:
    """(temperature, top_p, max_tokens) of a request; options this backend cannot honour are refused by name."""
    if sampling_params.get("top_k", -1) not in (-1, 0, None):
        raise ValueError(f"the hf CPU rollout samples without top-k; got top_k={sampling_params['top_k']!r}")
    if sampling_params.get("repetition_penalty", 1.0) != 1.0:
        raise ValueError(f"the hf CPU rollout has no repetition penalty; got {sampling_params['repetition_penalty']!r}")
    if sampling_params.get("logprobs"):
        raise ValueError(
            "the hf CPU rollout returns no log-probs: set actor_rollout_ref.rollout.calculate_log_probs=False"
        )
    max_tokens = sampling_params.get("max_tokens", sampling_params.get("max_new_tokens", response_length))
    return float(sampling_params.get("temperature", 1.0)), float(sampling_params.get("top_p", 1.0)), int(max_tokens)


class HFReplica(RolloutReplica):
    """One :class:`HFRolloutServer` per replica."""

    async def launch_servers(self) -> None:
        max_tokens = self.config.response_length
        server = (
            ray.remote(HFRolloutServer)
            .options(name=server_name(self.replica_rank), num_cpus=0, max_concurrency=self.max_concurrency)
            .remote(
                model_path=_model_path(self.model_config),
                replica_rank=self.replica_rank,
                response_length=max_tokens,
                dtype=self.config.dtype,
            )
        )
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"hf-cpu-replica-{self.replica_rank}"
        logger.info("hf rollout replica %d up (response_length %d)", self.replica_rank, max_tokens)

    def rollout_worker_use_gpu(self) -> bool:
        return False


def _model_path(model_config: Any) -> str:
    return getattr(model_config, "local_path", None) or model_config.path


class HFServerAdapter(BaseRollout):
    """Worker side: forwards the training engine's weights to this replica's server."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, *args: Any, **kwargs: Any):
        super().__init__(config, model_config, device_mesh)
        self.replica_rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        self._server = None

    @property
    def server(self) -> Any:
        if self._server is None:
            self._server = ray.get_actor(server_name(self.replica_rank))
        return self._server

    async def update_weights(
        self, weights: Generator[tuple[str, torch.Tensor], None, None], wire_format: str = "named_tensors", **kwargs
    ) -> None:
        if wire_format != "named_tensors":
            raise ValueError(f"the hf CPU rollout takes full named tensors; got wire_format={wire_format!r}")
        state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights}
        await self.server.load_weights.remote(state, global_steps=kwargs.get("global_steps"))

    async def resume(self, tags: list[str]) -> None: ...

    async def release(self) -> None: ...


def register() -> None:
    _ROLLOUT_REGISTRY[(BACKEND_NAME, "async")] = f"{__name__}.HFServerAdapter"
    RolloutReplicaRegistry.register(BACKEND_NAME, lambda: HFReplica)


register()
