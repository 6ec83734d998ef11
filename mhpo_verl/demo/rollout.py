"""Rollouts on the CPU with Hugging Face ``generate``: n sampled responses per prompt from a copy of the policy.

verl's rollouts are vLLM / SGLang / TensorRT-LLM servers, none of which runs here, so the demo samples from its own
transformers copy of the model and refreshes it from the training engine after every update, the same
"train, then push weights to the rollout" cycle verl's hybrid engine runs. The copy may use a lower precision than
training (bf16 samples ~1.4x faster on CPU); the old log-probs PPO needs are recomputed by the training engine, so
this only changes which samples are drawn, as vLLM in bf16 does on a GPU. On request the sampler also returns its own
log-probability (and entropy) of every sampled token, the behaviour policy's, which verl's
``rollout_correction.bypass_mode`` uses as the old log-probs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Rollout:
    """One sampled response. ``response_ids`` ends with the eos token unless the response was cut at the length
    limit (``truncated``)."""

    prompt_index: int
    prompt_ids: list[int]
    response_ids: list[int]
    truncated: bool
    log_probs: tuple[float, ...] | None = None
    """The sampler's log-probability of each response token (at the sampling temperature), if requested."""
    entropies: tuple[float, ...] | None = None
    """The entropy of the sampler's distribution at each response token, if requested."""


class HFSampler:
    """Batched sampling from a transformers causal LM whose weights can be replaced in place."""

    def __init__(self, model_path: str | Path, eos_token_id: int, pad_token_id: int, dtype: torch.dtype):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, attn_implementation="sdpa")
        self.model.eval()
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id

    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Copy weights (HF names) into the sampling model; every parameter must be covered. Returns the count."""
        state = self.model.state_dict()
        updated: set[str] = set()
        for name, tensor in named_tensors:
            if name not in state:
                raise KeyError(f"weight {name!r} from the training engine has no counterpart in the sampling model")
            if state[name].shape != tensor.shape:
                raise ValueError(f"weight {name!r}: shape {tuple(tensor.shape)}, expected {tuple(state[name].shape)}")
            state[name].copy_(tensor)
            updated.add(name)
        # Tied weights (SmolLM2's lm_head is its embedding) share storage: one name covers both.
        covered = {id(param) for name, param in self.model.named_parameters(remove_duplicate=False) if name in updated}
        missing = [name for name, param in self.model.named_parameters() if id(param) not in covered]
        if missing:
            raise ValueError(f"the training engine sent no weights for {len(missing)} parameters, e.g. {missing[:3]}")
        return len(updated)

    @torch.no_grad()
    def sample(
        self,
        prompts: list[list[int]],
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        seed: int = 0,
        with_log_probs: bool = False,
    ) -> list[Rollout]:
        """``n`` responses per prompt, prompt-major (all of prompt 0's, then prompt 1's...).

        ``with_log_probs`` also returns, per response token, log softmax(logits / temperature) of the sampled token and
        the entropy of that distribution: the distribution the token was drawn from, as long as ``top_p`` is 1 (a
        truncated nucleus would be another distribution, so that combination is refused).
        """
        if not prompts or any(len(ids) == 0 for ids in prompts):
            raise ValueError("every prompt must have at least one token")
        if n < 1 or max_new_tokens < 1:
            raise ValueError(f"n and max_new_tokens must be >= 1; got n={n}, max_new_tokens={max_new_tokens}")
        if with_log_probs and (temperature <= 0 or top_p != 1.0):
            raise ValueError(
                f"with_log_probs needs plain sampling (temperature > 0, top_p = 1); got temperature={temperature}, "
                f"top_p={top_p}"
            )
        width = max(map(len, prompts))
        # Left padding keeps every prompt's last token in the last column, where generation continues.
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        torch.manual_seed(seed)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            return_dict_in_generate=True,
            output_logits=with_log_probs,
            **(sampling if temperature > 0 else {"do_sample": False}),
        )
        generated_ids = output.sequences[:, width:]
        log_probs = entropies = None
        if with_log_probs:
            # The raw logits of every generated position (before any logits processor), [rows, new tokens, vocab].
            logits = torch.stack(output.logits, dim=1).float() / temperature
            log_softmax = torch.log_softmax(logits, dim=-1)
            log_probs = log_softmax.gather(-1, generated_ids.unsqueeze(-1)).squeeze(-1).tolist()
            entropies = (-(log_softmax.exp() * log_softmax).sum(-1)).tolist()
        rollouts = []
        for row, generated in enumerate(generated_ids.tolist()):
            prompt_index = row // n
            stop = generated.index(self.eos_token_id) + 1 if self.eos_token_id in generated else len(generated)
            rollouts.append(
                Rollout(
                    prompt_index=prompt_index,
                    prompt_ids=list(prompts[prompt_index]),
                    response_ids=generated[:stop],
                    truncated=self.eos_token_id not in generated,
                    log_probs=None if log_probs is None else tuple(log_probs[row][:stop]),
                    entropies=None if entropies is None else tuple(entropies[row][:stop]),
                )
            )
        return rollouts
