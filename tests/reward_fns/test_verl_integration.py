"""reward_fns as verl loads and calls it: the custom-reward loader (file path and pkg://), the reward loop's naive
manager, the legacy batch manager, and a Ray remote task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import reward_fns

PACKAGE_FILE = str(Path(reward_fns.__file__).resolve())


class CharTokenizer:
    """One token per character: enough for verl's managers, which only decode responses."""

    pad_token_id = 0

    @staticmethod
    def encode(text: str) -> list[int]:
        return [ord(char) for char in text]

    @staticmethod
    def decode(ids, skip_special_tokens: bool = True) -> str:
        return "".join(chr(int(i)) for i in ids if int(i) != 0)


def _config(path: str, name: str = "compute_score", **reward_kwargs) -> OmegaConf:
    return OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {"path": path, "name": name, "reward_kwargs": reward_kwargs},
                "reward_manager": {"source": "register", "name": "naive", "module": {"path": None}},
                "reward_model": {"enable": False},
            }
        }
    )


@pytest.mark.parametrize("path", [PACKAGE_FILE, "pkg://reward_fns"])
def test_verls_custom_reward_loader(path):
    from verl.trainer.ppo.reward import get_custom_reward_fn

    score = get_custom_reward_fn(_config(path, incorrect_score=-1.0))
    assert score(data_source="aime24", solution_str=r"so \boxed{204}", ground_truth="204", extra_info={})["acc"]
    assert score(data_source="aime24", solution_str=r"so \boxed{205}", ground_truth="204")["score"] == -1.0


def test_the_file_form_works_in_a_process_where_reward_fns_was_never_imported(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from verl.utils.import_utils import load_extern_object; "
        f"f = load_extern_object({PACKAGE_FILE!r}, 'compute_score'); "
        "print(f('math', r'\\boxed{\\frac12}', '0.5')['acc'])"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert output.stdout.strip().splitlines()[-1] == "True"


def _batch(responses: list[str], golds: list[str], source: str = "math500"):
    from verl import DataProto

    prompt_length, response_length = 4, max(map(len, responses))
    prompts = torch.full((len(responses), prompt_length), ord("q"))
    response_ids = torch.zeros((len(responses), response_length), dtype=torch.long)
    attention = torch.zeros((len(responses), prompt_length + response_length), dtype=torch.long)
    attention[:, :prompt_length] = 1
    for row, text in enumerate(responses):
        response_ids[row, : len(text)] = torch.tensor(CharTokenizer.encode(text))
        attention[row, prompt_length : prompt_length + len(text)] = 1
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": response_ids, "attention_mask": attention},
        non_tensors={
            "data_source": np.array([source] * len(responses), dtype=object),
            "reward_model": np.array([{"ground_truth": gold, "style": "rule"} for gold in golds], dtype=object),
            "extra_info": np.array([{"index": i} for i in range(len(responses))], dtype=object),
        },
    )


def test_reward_loop_naive_manager():
    from verl.trainer.ppo.reward import load_reward_manager

    manager = load_reward_manager(_config("pkg://reward_fns"), CharTokenizer())
    data = _batch([r"The answer is $\boxed{\dfrac{\pi}{2}}$.", r"\boxed{1.5}"], ["pi/2", "3/2"])
    for index in range(len(data)):
        # the manager runs blocking work on the event loop it captured when it was built
        output = manager.loop.run_until_complete(manager.run_single(data[index : index + 1]))
        assert output["reward_score"] == 1.0
        assert output["reward_extra_info"]["reason"] == "correct"


def test_legacy_batch_manager_with_the_batch_function():
    from verl.workers.reward_manager.batch import BatchRewardManager

    manager = BatchRewardManager(
        CharTokenizer(), num_examine=0, compute_score=reward_fns.compute_score_batch, num_workers=2
    )
    data = _batch([r"\boxed{2}", r"\boxed{3}", "no answer"], ["2", "2", "2"])
    output = manager(data, return_dict=True)
    rewards = output["reward_tensor"].sum(dim=-1).tolist()
    assert rewards == [1.0, 0.0, 0.0]
    assert list(output["reward_extra_info"]["reason"]) == ["correct", "wrong", "no_answer"]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_grading_inside_a_ray_task(ray_cluster):
    ray = ray_cluster

    @ray.remote
    def grade_remotely(cases):
        import reward_fns
        from reward_fns.bounded import close_all

        try:
            return [reward_fns.compute_score(*case)["acc"] for case in cases]
        finally:
            close_all()

    cases = [
        ("math500", r"\boxed{\frac{1}{2}}", "0.5"),
        ("math500", r"\boxed{2^{2^{20}} \cdot 3^{2^{20}}}", "6^{2^{20}}"),  # needs the sympy worker process
        ("aime24", r"\boxed{2^{2^{2^{2^{2^{2}}}}}}", "2^{2^{2^{2^{2^{2}}}}}+1"),
        ("gsm8k", "#### 18", "19"),
    ]
    assert ray.get(grade_remotely.remote(cases), timeout=300) == [True, True, False, False]
