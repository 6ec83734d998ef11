"""The answer forms found out of sample (issue 10), one mechanism each, in cases written for this project.

Every class has positives and the negatives that keep it honest: a fix that made the grader more lenient must not
let a wrong answer through (a false positive is a reward hack waiting to be found).
"""

from __future__ import annotations

import pytest

from reward_fns import compute_score, extract_answer
from reward_fns.equivalence import answers_equivalent
from reward_fns.normalize import normalize_answer
from reward_fns.sources import profile_for


def correct(response: str, gold: str, **options) -> bool:
    return compute_score("math", response, gold, **options)["acc"]


def boxed(answer: str) -> str:
    return f"Hence the result is $\\boxed{{{answer}}}$."


CASES = [
    # -- explicit thousands separators: MATH's ",\!" and "{,}" (spaced or not), in the response and in the gold
    ("thousands", boxed(r"20,\!160"), "20160", True),
    ("thousands", boxed("20160"), r"20,\!160", True),
    ("thousands", boxed(r"\$3,\!250.75"), "3250.75", True),
    ("thousands", boxed(r"7 {, }305"), "7305", True),
    ("thousands", boxed(r"1,\!000,\!001"), "1000001", True),
    ("thousands", boxed(r"20,\!160"), "20161", False),
    # -- a comma inside brackets separates items; outside, a well-formed run of groups is one number
    ("brackets", boxed("(4,250)"), "4250", False),
    ("brackets", boxed("[3,600]"), "3600", False),
    ("brackets", boxed(r"(1,5) \cup (5,300)"), r"(1, 5) \cup (5, 300)", True),
    ("brackets", boxed(r"(1,5) \cup (5,300)"), r"(1, 5) \cup (5300)", False),
    ("brackets", boxed("(0,250)"), "(0, 250)", True),
    ("brackets", boxed("12,345"), "12345", True),
    ("brackets", boxed("14,28,112"), "14, 28, 112", True),
    ("brackets", boxed("14,28,112"), "1428112", False),
    ("brackets", boxed("0,125"), "125", False),
    # -- an escaped dollar inside a formula is a currency sign, not the end of the formula
    ("escaped_dollar", r"So she pays $\$15.30$ in all.", "15.30", True),
    ("escaped_dollar", r"So she pays $\$15.30$ in all.", "15.40", False),
    # -- labels: a left side that names the answer is dropped; an equation stays an equation
    ("labels", boxed("(4,1)"), "(a,b)=(4,1)", True),
    ("labels", boxed("(2, 5, 7)"), "(r,s,t)=(2,5,7)", True),
    ("labels", boxed("(5, 2, 7)"), "(r,s,t)=(2,5,7)", False),
    ("labels", boxed("2:3"), "PQ:QR=2:3", True),
    ("labels", boxed("3:2"), "PQ:QR=2:3", False),
    ("labels", boxed(r"\frac{3}{4}"), r"\frac{BD}{DC}=\frac{3}{4}", True),
    ("labels", boxed("9"), "|MN|=9", True),
    ("labels", boxed("5:8"), "W_1:W_2=5:8", True),
    ("labels", boxed(r"(x, y) = (6, 1) \text{ and } (1, 6)"), "(6, 1), (1, 6)", True),
    ("labels", boxed("0"), "3x-6=0", False),
    ("labels", boxed("4p+q"), "9=4p+q", False),
    ("labels", boxed("2"), "3x-6=0", False),
    # -- a double inequality on a function or a named quantity is the interval it describes
    ("double_inequality", boxed("(-1,4)"), "-1<g(t)<4", True),
    ("double_inequality", boxed("[-1,4)"), "-1<g(t)<4", False),
    ("double_inequality", boxed("[2,9]"), r"2 \le h(x) \le 9", True),
    ("double_inequality", boxed("(2,9)"), r"2 \le h(x) \le 9", False),
    # -- several boxes across \( \) delimiters, in the response and in the gold; a hedge is still a hedge
    ("several_boxes", r"The roots are \(\boxed{3}\) and \(\boxed{-4}\).", "-4, 3", True),
    ("several_boxes", boxed("2, 5"), r"\(\boxed{2}\) and \(\boxed{5}\).", True),
    ("several_boxes", boxed("5"), r"\(\boxed{2}\) and \(\boxed{5}\).", False),
    ("several_boxes", r"\(\boxed{2}\) or maybe \(\boxed{5}\)", "2", False),
    ("several_boxes", r"It takes \boxed{3} hours and \boxed{40} minutes", "3, 40", True),
    # -- a response of one paragraph keeps its first character
    ("first_character", r"$\frac{3}{7}$", r"\frac{3}{7}", True),
    ("first_character", r"$\frac{3}{7}$", "7", False),
    # -- an exact value followed by its approximation: the exact value is the answer
    ("approx", boxed(r"\frac{2}{3} \approx 0.667"), r"\frac{2}{3}", True),
    ("approx", boxed(r"y = \sqrt{2} \approx 1.41"), r"\sqrt{2}", True),
    ("approx", boxed(r"\frac{3}{5} \approx 0.667"), r"\frac{2}{3}", False),
    ("approx", boxed(r"t \approx 4.5"), "4.5", True),
    # -- final answers in prose
    ("prose", "Final Answer: The smallest $k$ is 17.", "17", True),
    ("prose", "Final Answer: The smallest $k$ is 17.", "18", False),
    ("prose", "Each pair shakes once. Therefore, there are 45 handshakes in total.", "45", True),
    ("prose", "Each pair shakes once. Therefore, there are 45 handshakes in total.", "44", False),
    ("prose", "First $x = \\boxed{8}$, then $y = 11$. Final Answer: The final answer is $88$.", "88", True),
    ("prose", "First $x = \\boxed{8}$, then $y = 11$. Final Answer: The final answer is $88$.", "8", False),
    ("prose", 'Final Answer: The final answer is "$4$ and $9$".', "4, 9", True),
    ("prose", "The code printed on the lid is XK7Q", "7", False),
    ("prose", "Final Answer: there are 3 or 4 ways to do it.", "3", False),  # a hedge states no single value
    ("prose", "So $\\boxed{5}$. Final Answer: see the table above.", "5", True),  # prose without a value
    # -- unevaluated matrix arithmetic is the matrix it denotes
    ("matrices", boxed(r"\begin{pmatrix}2&0\\1&3\end{pmatrix} + I"), r"\begin{pmatrix}3&0\\1&4\end{pmatrix}", True),
    ("matrices", boxed(r"\begin{pmatrix}2&0\\1&3\end{pmatrix} + I"), r"\begin{pmatrix}2&0\\1&3\end{pmatrix}", False),
    ("matrices", boxed(r"2\begin{pmatrix}1&2\\0&1\end{pmatrix}"), r"\begin{pmatrix}2&4\\0&2\end{pmatrix}", True),
    (
        "matrices",
        boxed(r"\begin{pmatrix}1&1\\0&1\end{pmatrix}\begin{pmatrix}1&0\\1&1\end{pmatrix}"),
        r"\begin{pmatrix}2&1\\1&1\end{pmatrix}",
        True,
    ),
    (
        "matrices",
        boxed(r"\begin{pmatrix}1&0\\1&1\end{pmatrix}\begin{pmatrix}1&1\\0&1\end{pmatrix}"),
        r"\begin{pmatrix}2&1\\1&1\end{pmatrix}",
        False,  # the same two matrices in the other order: matrix products do not commute
    ),
    # -- commutativity inside operators that have no value
    ("operators", boxed(r"\sum_{i=1}^{m} b_i a_i"), r"\sum_{i=1}^{m} a_i b_i", True),
    ("operators", boxed(r"S_m = \prod_{j=1}^{m} (j+1)"), r"S_m = \prod_{j=1}^{m} (1+j)", True),
    ("operators", boxed(r"\sum_{i=1}^{m} a_i"), r"\sum_{i=1}^{m} b_i", False),
    ("operators", boxed(r"\sum_{i=0}^{m} a_i"), r"\sum_{i=1}^{m} a_i", False),
    # -- a true chain of numbers is its last member; a false one is no answer
    ("chains", boxed("120 + 36 = 156"), "156", True),
    ("chains", boxed(r"7 \cdot 8 = 54"), "54", False),
    ("chains", boxed(r"7 \cdot 8 = 54"), "56", False),
    # -- a set member written twice counts once; a list stating one value twice is that value
    ("sets", boxed("(1,2), (2,1), (1,2)"), "(1,2),(2,1)", True),
    ("sets", boxed("(1,2), (1,2)"), "(1,2),(2,1)", False),
    ("sets", r"That is $\boxed{2\frac{1}{4}}$, or $\boxed{\frac{9}{4}}$.", r"\frac{9}{4}", True),
    # -- semicolons separate solutions when commas separate their parts
    ("semicolons", boxed("(1,2),(3,4)"), "a=1,b=2;a=3,b=4", True),
    ("semicolons", boxed("(1,2),(3,5)"), "a=1,b=2;a=3,b=4", False),
    # -- a decimal comma against a decimal gold; a comma list against anything else
    ("decimal_comma", boxed("3,75"), "3.75", True),
    ("decimal_comma", boxed("3,75"), "3.76", False),
    ("decimal_comma", boxed("3.75"), "3, 75", False),
    # -- a numeral in another base is kept as written
    ("bases", boxed("x = 123_4"), "123_4", True),
    ("bases", boxed("27"), "123_4", False),
    # -- a spacing command glued to what follows it ("\quadx_2", a space-stripped gold)
    ("glued_quad", boxed("3, 5"), r"x_1=3,\quadx_2=5", True),
    ("glued_quad", boxed("3, 6"), r"x_1=3,\quadx_2=5", False),
]


@pytest.mark.parametrize(("kind", "response", "gold", "label"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_answer_form(kind, response, gold, label):
    assert correct(response, gold) == label


def test_every_failure_class_has_a_negative():
    kinds = {kind for kind, *_ in CASES}
    negatives = {kind for kind, _, _, label in CASES if not label}
    assert kinds - negatives == set()


def test_explicit_separators_are_removed_before_spacing_commands():
    assert normalize_answer(r"10,\!080") == "10080"
    assert normalize_answer(r"(10,\!080, 3)") == "(10080,3)"  # explicit, so even inside brackets


def test_inline_formulas_do_not_span_lines():
    tiers = profile_for("math").tiers(strict=False)
    assert extract_answer("Answer $ \n 9 \n $", tiers).answer is None
    assert extract_answer("Answer \\( \n 9 \n \\)", tiers).answer is None
    assert extract_answer("Answer $$ \n 9 \n $$", tiers).answer == "9"  # display math may


def test_the_interval_option():
    inequality, interval = boxed(r"-1 \le x \le 3"), "[-1,3]"
    assert correct(inequality, interval)
    assert not correct(inequality, interval, inequality_for_interval=False)
    assert correct(boxed("[-1,3]"), r"-1 \le x \le 3", inequality_for_interval=False)  # an interval always answers
    with pytest.raises(ValueError, match="inequality_for_interval"):
        compute_score("math", inequality, interval, inequality_for_interval="no")


def test_ratio_of_more_than_two_parts_is_not_a_value():
    assert answers_equivalent("1:2:3", "1/6").reason == "parse_error"
