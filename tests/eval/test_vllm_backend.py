"""The vLLM backend's calls, checked against a stand-in ``vllm`` module (vLLM is GPU-only and not installed).

The stand-in records what it is given and answers in the shape of vLLM's ``RequestOutput`` / ``CompletionOutput``
(``outputs[0].text``, ``.token_ids``, ``.finish_reason``), so these tests pin the arguments we build and how we
read the answers; they cannot show that a real vLLM accepts them, which needs a GPU machine.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import pytest

from mhpo_verl.eval.backends import BackendOptions, GenerationRequest, resolve_backend
from mhpo_verl.eval.errors import EvalInputError
from mhpo_verl.eval.sampling import SamplingSettings
from mhpo_verl.eval.vllm_backend import VLLMBackend, engine_kwargs, sampling_kwargs


def make_options(**overrides) -> BackendOptions:
    values = {
        "model": "/ckpt/hf",
        "tokenizer": "/ckpt/hf",
        "sampling": SamplingSettings(temperature=0.6, top_p=0.95, max_new_tokens=2048, seed=7),
        "stop_token_ids": (151643, 151645),
        "dtype": "bfloat16",
        "tensor_parallel_size": 4,
        "gpu_memory_utilization": 0.85,
        "max_model_len": 4096,
    }
    values.update(overrides)
    return BackendOptions(**values)


def test_engine_kwargs():
    kwargs = engine_kwargs(make_options(engine_args={"enforce_eager": True, "max_num_seqs": 512}))
    assert kwargs == {
        "model": "/ckpt/hf",
        "tokenizer": "/ckpt/hf",
        "dtype": "bfloat16",
        "tensor_parallel_size": 4,
        "gpu_memory_utilization": 0.85,
        "trust_remote_code": False,
        "seed": 7,
        "enable_prefix_caching": True,
        "max_model_len": 4096,
        "enforce_eager": True,
        "max_num_seqs": 512,
    }
    assert "max_model_len" not in engine_kwargs(make_options(max_model_len=None))
    with pytest.raises(EvalInputError, match=r"cannot set \['model'\]"):
        engine_kwargs(make_options(engine_args={"model": "other"}))


def test_sampling_kwargs_one_sample_per_request_with_its_own_seed():
    options = make_options()
    kwargs = sampling_kwargs(GenerationRequest((1, 2, 3), seed=12345), options)
    assert kwargs == {
        "n": 1,
        "temperature": 0.6,
        "top_p": 0.95,
        "max_tokens": 2048,
        "seed": 12345,
        "stop_token_ids": [151643, 151645],
        "skip_special_tokens": True,
    }
    with_top_k = make_options(sampling=SamplingSettings(top_k=20))
    assert sampling_kwargs(GenerationRequest((1,), 0), with_top_k)["top_k"] == 20


@dataclass
class FakeCompletionOutput:
    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass
class FakeRequestOutput:
    outputs: list[FakeCompletionOutput]


@dataclass
class FakeLLM:
    kwargs: dict
    calls: list = field(default_factory=list)
    finish_reason: str = "stop"

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True):
        self.calls.append((prompts, sampling_params, use_tqdm))
        return [
            FakeRequestOutput([FakeCompletionOutput(f"answer {i}", list(range(3 + i)), self.finish_reason)])
            for i, _ in enumerate(prompts)
        ]


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.created = []

    def llm(**kwargs):
        instance = FakeLLM(kwargs)
        module.created.append(instance)
        return instance

    module.LLM = llm
    module.SamplingParams = lambda **kwargs: ("SamplingParams", kwargs)
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def test_generate_sends_token_prompts_and_per_sample_params(fake_vllm):
    options = make_options()
    backend = VLLMBackend(options)
    (llm,) = fake_vllm.created
    assert llm.kwargs == engine_kwargs(options)

    requests = [GenerationRequest((5, 6), seed=1), GenerationRequest((5, 6), seed=2), GenerationRequest((9,), 3)]
    completions = backend.generate(requests)
    ((prompts, params, use_tqdm),) = llm.calls
    assert prompts == [{"prompt_token_ids": [5, 6]}, {"prompt_token_ids": [5, 6]}, {"prompt_token_ids": [9]}]
    assert [p[1]["seed"] for p in params] == [1, 2, 3] and all(p[1]["n"] == 1 for p in params)
    assert use_tqdm is False
    assert [(c.text, c.n_tokens, c.truncated) for c in completions] == [
        ("answer 0", 3, False), ("answer 1", 4, False), ("answer 2", 5, False),
    ]

    llm.finish_reason = "length"
    assert all(c.truncated for c in backend.generate(requests))
    llm.finish_reason = "abort"
    with pytest.raises(RuntimeError, match="reason 'abort'"):
        backend.generate(requests)


def test_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(RuntimeError, match="needs vLLM"):
        VLLMBackend(make_options())


def test_auto_backend_without_vllm_or_gpu_is_hf():
    assert resolve_backend("auto") == "hf"
    with pytest.raises(EvalInputError, match="--backend must be one of"):
        resolve_backend("sglang")
