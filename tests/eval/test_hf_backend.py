"""The HF backend: seeded per-row sampling, greedy parity with transformers, stop tokens, batch invariance."""

from __future__ import annotations

import pytest
import torch

from mhpo_verl.eval.backends import BackendOptions, GenerationRequest
from mhpo_verl.eval.hf_backend import HFBackend, choose_tokens
from mhpo_verl.eval.sampling import SamplingSettings, sample_seed
from mhpo_verl.eval.tokenization import load_tokenizer, render_prompt_ids, stop_token_ids
from tests.eval.conftest import BOS_ID, END_TURN_ID, EOS_ID

PROBS = torch.tensor([[0.5, 0.3, 0.2]])
LOGITS = PROBS.log()


@pytest.mark.parametrize(
    ("uniform", "top_p", "top_k", "expected"),
    [
        (0.10, 1.0, 0, 0),  # cdf 0.5 | 0.8 | 1.0
        (0.60, 1.0, 0, 1),
        (0.95, 1.0, 0, 2),
        (0.95, 1.0, 2, 1),  # top-2 renormalised: target 0.95 * 0.8 = 0.76 < 0.8
        (0.95, 0.7, 0, 1),  # nucleus 0.7 keeps {0, 1}: mass before token 2 is 0.8 >= 0.7
        (0.99, 0.01, 0, 0),  # a tiny nucleus is the argmax
    ],
)
def test_choose_tokens_inverse_cdf(uniform, top_p, top_k, expected):
    token = choose_tokens(LOGITS, torch.tensor([uniform], dtype=torch.float64), 1.0, top_p, top_k)
    assert token.tolist() == [expected]


def test_choose_tokens_greedy_and_temperature():
    assert choose_tokens(LOGITS, torch.tensor([0.99]), 0.0).tolist() == [0]
    # A low temperature sharpens the distribution: p0 = 0.5^10 / sum(p^10) > 0.99, so u = 0.98 still picks token 0.
    assert choose_tokens(LOGITS, torch.tensor([0.98], dtype=torch.float64), 0.1).tolist() == [0]


def test_choose_tokens_follows_the_distribution():
    generator = torch.Generator().manual_seed(0)
    uniforms = torch.rand(20000, generator=generator, dtype=torch.float64)
    tokens = choose_tokens(LOGITS.expand(20000, 3), uniforms, 1.0)
    frequencies = torch.bincount(tokens, minlength=3).double() / 20000
    assert torch.allclose(frequencies, PROBS[0].double(), atol=0.015)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def options(model_dir, **sampling) -> BackendOptions:
    tok = load_tokenizer(str(model_dir))
    return BackendOptions(
        model=str(model_dir),
        tokenizer=str(model_dir),
        sampling=SamplingSettings(**{"max_new_tokens": 16, **sampling}),
        stop_token_ids=tuple(stop_token_ids(str(model_dir), tok)),
        device="cpu",
    )


def prompts(tokenizer, questions):
    return [tuple(render_prompt_ids(tokenizer, [{"role": "user", "content": q}])) for q in questions]


def test_stop_tokens_are_eos_plus_the_generation_config_list(tiny_model_dir, tokenizer):
    assert stop_token_ids(str(tiny_model_dir), tokenizer) == [EOS_ID, END_TURN_ID]


def test_chat_prompt_has_one_bos_and_opens_the_assistant_turn(tokenizer):
    ids = render_prompt_ids(tokenizer, [{"role": "user", "content": "What is 1 + 1?"}], system_prompt="Be brief.")
    assert ids.count(BOS_ID) == 1 and ids[0] == BOS_ID
    assert tokenizer.decode(ids) == "<s><|system|>Be brief.<|end|><|user|>What is 1 + 1?<|end|><|assistant|>"
    raw = render_prompt_ids(tokenizer, [{"role": "user", "content": "What is 1 + 1?"}], prompt_format="raw")
    assert tokenizer.decode(raw, skip_special_tokens=True) == "What is 1 + 1?"


def test_greedy_matches_transformers_generate_and_ignores_checkpoint_sampling_defaults(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM, GenerationConfig

    backend = HFBackend(options(tiny_model_dir, temperature=0.0))
    ids = prompts(tokenizer, ["What is 1 + 1?", "Compute 3 * 4, then box the answer."])
    completions = backend.generate([GenerationRequest(p, seed=0) for p in ids])

    reference = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    checkpoint_defaults = reference.generation_config  # do_sample, temperature 3, top_k 2, repetition_penalty 1.3
    greedy = GenerationConfig(max_new_tokens=16, do_sample=False, eos_token_id=[EOS_ID, END_TURN_ID], pad_token_id=0)

    def reference_text(prompt) -> tuple[str, int, bool]:
        inputs = torch.tensor([prompt])
        output = reference.generate(inputs, attention_mask=torch.ones_like(inputs), generation_config=greedy)
        output = output[0, len(prompt) :].tolist()
        stop = next((i for i, t in enumerate(output) if t in (EOS_ID, END_TURN_ID)), None)
        kept = output if stop is None else output[:stop]
        return tokenizer.decode(kept, skip_special_tokens=True), len(output) if stop is None else stop + 1, stop is None

    reference.generation_config = GenerationConfig()
    for prompt, completion in zip(ids, completions):
        assert (completion.text, completion.n_tokens, completion.truncated) == reference_text(prompt)
    # The checkpoint's defaults would have changed the output (here: its repetition penalty), so ignoring them matters.
    reference.generation_config = checkpoint_defaults
    assert [c.text for c in completions] != [reference_text(p)[0] for p in ids]


def test_a_sample_does_not_depend_on_its_batch(tiny_model_dir, tokenizer):
    backend = HFBackend(options(tiny_model_dir, temperature=1.0, top_p=0.95))
    short, long_, other = prompts(tokenizer, ["1+1?", "A much longer question about the sum of 10 integers?", "x?"])
    seeds = [sample_seed(0, "aime24", "0", i) for i in range(3)]
    alone = backend.generate([GenerationRequest(short, seeds[0])])
    batched = backend.generate(
        [GenerationRequest(long_, seeds[1]), GenerationRequest(short, seeds[0]), GenerationRequest(other, seeds[2])]
    )
    assert batched[1] == alone[0]
    again = backend.generate([GenerationRequest(short, seeds[0])])
    assert again == alone
    different_seeds = backend.generate([GenerationRequest(short, sample_seed(0, "aime24", "0", i)) for i in range(6)])
    assert len({c.text for c in different_seeds}) > 1


def test_stop_token_ends_the_response(tiny_model_dir, tokenizer):
    everything_stops = options(tiny_model_dir, temperature=1.0)
    everything_stops = BackendOptions(**{**everything_stops.__dict__, "stop_token_ids": tuple(range(len(tokenizer)))})
    (completion,) = HFBackend(everything_stops).generate([GenerationRequest(prompts(tokenizer, ["q"])[0], 1)])
    assert completion.text == "" and completion.n_tokens == 1 and not completion.truncated

    nothing_stops = BackendOptions(**{**everything_stops.__dict__, "stop_token_ids": (len(tokenizer) + 5,)})
    (completion,) = HFBackend(nothing_stops).generate([GenerationRequest(prompts(tokenizer, ["q"])[0], 1)])
    assert completion.n_tokens == 16 and completion.truncated
