"""Forward+backward time and memory of the `mhpo` policy loss against verl's built-in losses, side by side.

Every loss is reached the way verl's ``ppo_loss`` reaches it (``get_policy_loss_fn(name)(..., config=ActorConfig)``,
metrics included) on identical tensors, in interleaved rounds (the order rotates each round), and the median time of
each is printed as a ratio to ``vanilla`` (verl's PPO-clip, the GRPO loss). Memory is reported two ways:

* held for backward: bytes of the distinct tensors autograd saves between forward and backward (exact);
* peak RSS: the rise of the process's resident-set high-water mark (Linux VmHWM, reset through
  /proc/self/clear_refs just before) over one forward+backward, in a fresh child process per loss so that the losses
  cannot see each other's allocations.

    python examples/benchmarks/loss_speed.py                 # 64 x 8192 tokens, fp32, CPU (the README's figures)
    python examples/benchmarks/loss_speed.py --batch 8 --length 1024 --rounds 5   # quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

LOSSES: dict[str, dict] = {
    "vanilla": {"loss_mode": "vanilla"},
    "sapo": {"loss_mode": "sapo"},
    "gspo": {"loss_mode": "gspo"},
    "mhpo": {"loss_mode": "mhpo", "implementation": "eager"},
    "mhpo_fused": {"loss_mode": "mhpo", "implementation": "fused"},
}
BASELINE = "vanilla"


@dataclass
class Inputs:
    old_log_prob: torch.Tensor
    log_prob: torch.Tensor
    advantages: torch.Tensor
    response_mask: torch.Tensor


def make_inputs(batch: int, length: int, seed: int) -> Inputs:
    """Off-policy-ish log-probs (log-ratio std 0.3), per-response advantages, ragged lengths with NaN padding."""
    generator = torch.Generator().manual_seed(seed)
    old_log_prob = -3.0 * torch.rand(batch, length, generator=generator)
    log_prob = old_log_prob + 0.3 * torch.randn(batch, length, generator=generator)
    advantages = torch.randn(batch, 1, generator=generator).expand(batch, length).contiguous()
    lengths = torch.randint(length // 4, length + 1, (batch, 1), generator=generator)
    response_mask = torch.arange(length)[None, :] < lengths
    log_prob[~response_mask] = float("nan")
    return Inputs(old_log_prob, log_prob, advantages, response_mask)


def make_config(spec: dict, inputs: Inputs, loss_agg_mode: str):
    from verl.workers.config import FSDPActorConfig

    from mhpo_verl.config import MHPOPolicyLossConfig

    config = FSDPActorConfig(
        strategy="fsdp2",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        loss_agg_mode=loss_agg_mode,
        policy_loss=MHPOPolicyLossConfig(**spec),
    )
    config.global_batch_info.update(
        dp_size=1,
        batch_num_tokens=int(inputs.response_mask.sum()),
        global_batch_size=inputs.response_mask.shape[0],
        loss_scale_factor=None,
    )
    return config


def call_loss(inputs: Inputs, config, log_prob: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The registered loss, called by keyword exactly as verl's ``ppo_loss`` calls it."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    return get_policy_loss_fn(config.policy_loss.loss_mode)(
        old_log_prob=inputs.old_log_prob,
        log_prob=log_prob,
        advantages=inputs.advantages,
        response_mask=inputs.response_mask,
        loss_agg_mode=config.loss_agg_mode,
        config=config,
        rollout_is_weights=None,
    )


def forward_backward(inputs: Inputs, config) -> None:
    loss, _metrics = call_loss(inputs, config, inputs.log_prob.clone().requires_grad_())
    loss.backward()


def saved_for_backward_bytes(inputs: Inputs, config) -> int:
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    log_prob = inputs.log_prob.clone().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss, _ = call_loss(inputs, config, log_prob)
    loss.backward()
    # The inputs themselves exist anyway; count only what the loss adds.
    for tensor in (log_prob, inputs.old_log_prob, inputs.advantages, inputs.response_mask):
        storages.pop(tensor.untyped_storage().data_ptr(), None)
    return sum(storages.values())


def peak_rss_child(name: str, args: argparse.Namespace) -> float:
    """Peak RSS rise (MiB) of one forward+backward of ``name``, in a fresh interpreter."""
    command = [sys.executable, __file__, "--child-peak-rss", name, "--batch", str(args.batch),
               "--length", str(args.length), "--seed", str(args.seed), "--loss-agg-mode", args.loss_agg_mode]
    if args.threads:
        command += ["--threads", str(args.threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def child_peak_rss(name: str, args: argparse.Namespace) -> None:
    import verl  # noqa: F401  (loads the mhpo plugin)

    inputs = make_inputs(args.batch, args.length, args.seed)
    config = make_config(LOSSES[name], inputs, args.loss_agg_mode)
    small = make_inputs(2, 16, args.seed)
    forward_backward(small, make_config(LOSSES[name], small, args.loss_agg_mode))  # import/compile warm-up
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets VmHWM to the current RSS
    before = _status_kib("VmRSS")
    forward_backward(inputs, config)
    print(json.dumps({"peak_rss_mib": (_status_kib("VmHWM") - before) / 1024}))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status (the peak-RSS measurement needs Linux)")


def check_identical(inputs: Inputs, loss_agg_mode: str) -> float:
    """Largest absolute difference between eager and fused MHPO in loss value, gradient and metrics."""
    results = []
    for name in ("mhpo", "mhpo_fused"):
        config = make_config(LOSSES[name], inputs, loss_agg_mode)
        log_prob = inputs.log_prob.clone().requires_grad_()
        loss, metrics = call_loss(inputs, config, log_prob)
        loss.backward()
        results.append((loss.detach(), log_prob.grad, metrics))
    (loss_a, grad_a, metrics_a), (loss_b, grad_b, metrics_b) = results
    metric_gap = max(abs(metrics_a[key] - metrics_b[key]) for key in metrics_a)
    return max((loss_a - loss_b).abs().item(), (grad_a - grad_b).abs().max().item(), metric_gap)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=21, help="interleaved timing rounds (median is reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loss-agg-mode", default="seq-mean-token-mean")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--skip-rss", action="store_true", help="skip the per-loss child processes for peak RSS")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--child-peak-rss", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_peak_rss:
        child_peak_rss(args.child_peak_rss, args)
        return 0

    import verl  # noqa: F401  (loads the mhpo plugin)

    inputs = make_inputs(args.batch, args.length, args.seed)
    configs = {name: make_config(spec, inputs, args.loss_agg_mode) for name, spec in LOSSES.items()}
    names = list(LOSSES)
    for name in names:  # warm-up
        forward_backward(inputs, configs[name])
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[: round_index % len(names)]
        for name in order:
            start = time.perf_counter()
            forward_backward(inputs, configs[name])
            seconds[name].append(time.perf_counter() - start)

    median = {name: statistics.median(times) for name, times in seconds.items()}
    saved = {name: saved_for_backward_bytes(inputs, configs[name]) for name in names}
    rss = {} if args.skip_rss else {name: peak_rss_child(name, args) for name in names}
    gap = check_identical(inputs, args.loss_agg_mode)

    tokens = int(inputs.response_mask.sum())
    print(f"{args.batch} x {args.length} fp32 on CPU ({torch.get_num_threads()} threads), {tokens} valid tokens, "
          f"loss_agg_mode={args.loss_agg_mode}, median of {args.rounds} interleaved rounds")
    header = f"{'loss':<12}{'fwd+bwd ms':>12}{'vs ' + BASELINE:>12}{'saved MiB':>12}{'vs ' + BASELINE:>12}"
    if rss:
        header += f"{'peak RSS MiB':>14}{'vs ' + BASELINE:>12}"
    print(header)
    for name in names:
        row = (f"{name:<12}{median[name] * 1e3:>12.2f}{median[name] / median[BASELINE]:>12.2f}"
               f"{saved[name] / 2**20:>12.1f}{saved[name] / saved[BASELINE]:>12.2f}")
        if rss:
            row += f"{rss[name]:>14.1f}{rss[name] / rss[BASELINE]:>12.2f}"
        print(row)
    print(f"eager vs fused MHPO: max |difference| in loss, gradient and metrics = {gap:.3g}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "median_seconds": median, "saved_bytes": saved, "peak_rss_mib": rss,
                       "eager_fused_max_difference": gap}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
