"""The verl-facing API: result contract, options, reward shaping, ground-truth forms, batch grading."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from reward_fns import bounded, compute_score, compute_score_batch, scoring
from reward_fns.labelled import load_cases
from tests.reward_fns.helpers import child_pids, is_alive, wait_until

REASONS = {
    "correct",
    "wrong",
    "no_answer",
    "unfinished_think",
    "truncated_answer",
    "answer_too_long",
    "parse_error",
    "timeout",
    "undecided",
}
SAMPLE = [case for case in load_cases() if "adversarial" not in case.tags][::7]


def test_result_contract():
    result = compute_score("math500", r"so $\boxed{\frac{1}{2}}$", "0.5")
    assert result == {"score": 1.0, "acc": True, "pred": r"\frac{1}{2}", "reason": "correct"}
    assert list(result) == list(scoring.RESULT_KEYS)
    wrong = compute_score("math500", r"\boxed{3}", "0.5")
    assert (wrong["score"], wrong["acc"], wrong["reason"]) == (0.0, False, "wrong")
    assert type(wrong["score"]) is float and type(wrong["acc"]) is bool


def _garbage(rng: random.Random) -> str:
    pieces = ["\\boxed{", "}", "{", "\\frac", "\\sqrt", "^", "_", "$", "(", ")", "[", "]", "\\left", "\\right", "1",
              "0", "-", "+", "/", "x", "=", "\\pi", "e", "i", "!", "%", "\\text{", "Answer:", "####", "**", "\n",
              "<think>", "</think>", ",", "\\\\", "&", "\\begin{pmatrix}", "\\end{pmatrix}", "\\infty", "\\pm",
              "é", "\x00", "∞", "√", ".", "9" * 50, "\\cup", "<", "\\le", "|"]
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))


def test_never_raises_on_garbage_model_output():
    rng = random.Random(1234)
    for _ in range(400):
        response, gold = _garbage(rng), rng.choice(["5", "\\frac{1}{2}", "(1,2)", "x^2", "[0,1)", "\\pm 3"])
        result = compute_score("math", response, gold)
        assert set(result) == set(scoring.RESULT_KEYS)
        assert result["reason"] in REASONS, (response, result)
        assert len(result["pred"]) <= scoring.MAX_PRED_CHARS


def test_unknown_and_invalid_options_are_clear_errors():
    with pytest.raises(TypeError, match="timeout_sec"):
        compute_score("math", r"\boxed{1}", "1", timeout_sec=2)
    with pytest.raises(ValueError, match="timeout_s=-1"):
        compute_score("math", r"\boxed{1}", "1", timeout_s=-1)
    with pytest.raises(ValueError, match="strict='yes'"):
        compute_score("math", r"\boxed{1}", "1", strict="yes")
    with pytest.raises(ValueError, match="max_response_length"):
        compute_score("math", r"\boxed{1}", "1", overlong_buffer_len=10)
    # keyword arguments verl itself adds are accepted
    assert compute_score("math", r"\boxed{1}", "1", reward_router_address=None)["acc"]


def test_reward_values_and_format_reward():
    options = {"correct_score": 1.0, "incorrect_score": -1.0, "no_answer_score": -2.0, "format_score": 0.5}
    assert compute_score("math", r"\boxed{2}", "2", **options)["score"] == 1.0
    assert compute_score("math", r"\boxed{3}", "2", **options)["score"] == -0.5  # wrong, but boxed
    assert compute_score("math", "The answer is 3", "2", **options)["score"] == -1.0  # wrong, no box
    assert compute_score("math", "I give up", "2", **options)["score"] == -2.0
    assert compute_score("math", "<think>\\boxed{2}", "2", **options)["score"] == -2.0


def test_overlong_penalty():
    options = {"max_response_length": 100, "overlong_buffer_len": 20, "overlong_penalty_factor": 1.0}
    scores = {
        length: compute_score("math", r"\boxed{2}", "2", {"response_length": length}, **options)
        for length in (50, 80, 90, 100)
    }
    assert [scores[n]["overlong_penalty"] for n in (50, 80, 90, 100)] == [0.0, 0.0, -0.5, -1.0]
    assert scores[90]["score"] == 0.5 and scores[90]["acc"] is True
    with pytest.raises(ValueError, match="tokenizer_path"):
        compute_score("math", r"\boxed{2}", "2", {}, **options)


@pytest.mark.parametrize(
    ("gold", "response", "acc"),
    [
        (72, "#### 72", True),
        (0.5, r"\boxed{1/2}", True),
        (["3", "\\frac{6}{2}"], r"\boxed{3}", True),
        (("4", "5"), r"\boxed{5}", True),
        (np.array(["1", "2"], dtype=object), r"\boxed{2}", True),
        (np.str_("7"), r"\boxed{7}", True),
        (np.int64(7), r"\boxed{8}", False),
    ],
)
def test_ground_truth_forms(gold, response, acc):
    assert compute_score("gsm8k", response, gold)["acc"] is acc


@pytest.mark.parametrize("gold", [None, True, {"answer": 1}])
def test_ground_truth_of_the_wrong_type_is_a_clear_error(gold):
    with pytest.raises(TypeError, match="ground_truth"):
        compute_score("math", r"\boxed{1}", gold)


@pytest.mark.parametrize("gold", ["", "   ", []])
def test_empty_ground_truth_is_a_clear_error(gold):
    with pytest.raises(ValueError, match="ground_truth"):
        compute_score("math", r"\boxed{1}", gold)


def test_solution_must_be_a_string():
    with pytest.raises(TypeError, match="solution_str"):
        compute_score("math", None, "1")


def _batch_inputs(cases):
    return (
        [case.source for case in cases],
        [case.response for case in cases],
        [case.gold for case in cases],
        [{"index": index} for index, _ in enumerate(cases)],
    )


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batch_matches_single_grading(num_workers):
    sources, responses, golds, extras = _batch_inputs(SAMPLE)
    results = compute_score_batch(sources, responses, golds, extras, num_workers=num_workers)
    expected = [compute_score(s, r, g, e) for s, r, g, e in zip(sources, responses, golds, extras)]
    assert results == expected
    assert [result["acc"] for result in results] == [case.label for case in SAMPLE]


def test_batch_validates_its_inputs():
    with pytest.raises(ValueError, match="batch lengths differ"):
        compute_score_batch(["math"], [r"\boxed{1}", r"\boxed{2}"], ["1", "2"])
    with pytest.raises(ValueError, match="extra_infos"):
        compute_score_batch(["math"], [r"\boxed{1}"], ["1"], [{}, {}])
    with pytest.raises(ValueError, match="num_workers=-1"):
        compute_score_batch(["math"], [r"\boxed{1}"], ["1"], num_workers=-1)
    with pytest.raises(TypeError, match="solution_strs"):
        compute_score_batch(["math"], [None], ["1"])


def test_batch_timeout_costs_one_reward_not_the_batch(monkeypatch):
    monkeypatch.setattr(scoring, "GRADE_TASK", "tests.reward_fns.helpers:grade_slowly_on_request")
    responses = [r"\boxed{1}", r"SLEEP \boxed{2}", r"\boxed{3}"]
    results = compute_score_batch(["math"] * 3, responses, ["1", "2", "3"], num_workers=2, timeout_s=0.5)
    assert [result["reason"] for result in results] == ["correct", "timeout", "correct"]
    assert results[1]["score"] == 0.0


def test_symbolic_stage_works_from_worker_threads():
    case = next(case for case in load_cases() if case.id == "sy-huge-power-product")
    outcomes = []

    def work() -> None:
        outcomes.append(compute_score(case.source, case.response, case.gold)["acc"])

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == [True, True, True]
    assert bounded.shared_pool(scoring.SYMBOLIC_WORKERS).worker_pids()  # it really used a worker


def test_no_process_outlives_close_all():
    compute_score_batch(["math"] * 4, [r"\boxed{1}"] * 4, ["1"] * 4, num_workers=3)
    workers = set(bounded.shared_pool(3).worker_pids())
    assert workers and workers <= child_pids()
    bounded.close_all()
    assert wait_until(lambda: not (workers & child_pids()))
    assert not any(is_alive(pid) for pid in workers)


def test_overlong_penalty_counts_tokens_with_a_local_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocabulary = {"[UNK]": 0, "word": 1, "\\boxed{2}": 2}
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(tmp_path)
    options = {"max_response_length": 10, "overlong_buffer_len": 4, "tokenizer_path": str(tmp_path)}
    short = compute_score("math", "word " * 5 + r"\boxed{2}", "2", **options)  # 6 tokens: within budget
    long = compute_score("math", "word " * 7 + r"\boxed{2}", "2", **options)  # 8 tokens: 2 into the buffer
    assert (short["overlong_penalty"], long["overlong_penalty"]) == (0.0, -0.5)
