"""Cost of the evaluator's seeded, batch-independent sampling against transformers' own sampling.

The HF backend of ``python -m mhpo_verl.eval`` picks every token itself, from one random stream per sample (so a
resumed run draws the same samples). This script times it against ``model.generate(do_sample=True)`` on the same
model and batch, side by side in one process, and prints generated tokens per second and their ratio.

The model has SmolLM2-135M's shape (30 layers, hidden 576, 9/3 heads, vocabulary 49,152) with random weights:
the same compute as the real checkpoint, nothing to download. EOS is disabled on both sides so that each row
generates exactly ``--new-tokens`` tokens.

    nice -n 10 .venv/bin/python examples/benchmarks/eval_hf_sampling.py [--batch 8] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from mhpo_verl.eval.backends import BackendOptions, GenerationRequest
from mhpo_verl.eval.hf_backend import HFBackend
from mhpo_verl.eval.sampling import SamplingSettings, sample_seed


def smollm2_shaped_checkpoint(folder: str) -> int:
    """Save a random SmolLM2-135M-shaped Llama and a throwaway tokenizer; returns the vocabulary size."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=1,
        eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    vocab = {f"t{i}": i for i in range(config.vocab_size)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="t3"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="t0").save_pretrained(folder)
    return config.vocab_size


def best_times(functions: dict, repeats: int) -> dict[str, float]:
    """Best wall time of each function; runs are interleaved so that a load spike on a shared machine hits both."""
    for fn in functions.values():
        fn()  # warm-up
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        vocab_size = smollm2_shaped_checkpoint(folder)
        no_stop = vocab_size + 1  # an id that is never generated: every row runs to --new-tokens
        sampling = SamplingSettings(temperature=0.6, top_p=0.95, max_new_tokens=args.new_tokens)
        ours = HFBackend(BackendOptions(folder, folder, sampling, (no_stop,), device="cpu", dtype="float32"))
        generator = torch.Generator().manual_seed(1)
        prompts = torch.randint(3, vocab_size, (args.batch, args.prompt_tokens), generator=generator)
        seeds = [sample_seed(0, "benchmark", str(i), 0) for i in range(args.batch)]
        requests = [GenerationRequest(tuple(row.tolist()), seed) for row, seed in zip(prompts, seeds)]
        native_config = GenerationConfig(
            max_new_tokens=args.new_tokens, do_sample=True, temperature=0.6, top_p=0.95, top_k=0,
            eos_token_id=no_stop, pad_token_id=0,
        )  # fmt: skip

        def native() -> None:
            with torch.inference_mode():
                ours.model.generate(prompts, attention_mask=torch.ones_like(prompts), generation_config=native_config)

        def seeded() -> None:
            completions = ours.generate(requests)
            assert all(c.n_tokens == args.new_tokens for c in completions)

        tokens = args.batch * args.new_tokens
        best = best_times({"native": native, "seeded": seeded}, args.repeats)
        native_s, seeded_s = best["native"], best["seeded"]
    print(f"batch {args.batch} x {args.new_tokens} new tokens, prompt {args.prompt_tokens}, "
          f"SmolLM2-135M shape, fp32, {torch.get_num_threads()} CPU threads, best of {args.repeats}")
    print(f"transformers do_sample (baseline): {native_s:7.3f} s  {tokens / native_s:8.1f} tokens/s")
    print(f"mhpo-eval seeded per-sample:       {seeded_s:7.3f} s  {tokens / seeded_s:8.1f} tokens/s")
    print(f"throughput ratio (seeded / baseline): {native_s / seeded_s:.3f}")


if __name__ == "__main__":
    main()
