import pytest

from lightning_tickets.schedule import sparsity_schedule


def test_linear_rate_01_gives_paper_sparsities():
    assert sparsity_schedule(0.9, "linear", 0.1) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    # values are exact decimals, not accumulated float error
    assert sparsity_schedule(0.9, "linear", 0.1)[3] == 0.3


def test_geometric_prunes_rate_of_remaining_and_clips_last():
    s = sparsity_schedule(0.7, "geometric", 0.2)
    assert s == pytest.approx([0.0, 0.2, 0.36, 0.488, 0.5904, 0.67232, 0.7])
    remaining = [1 - x for x in s]
    for a, b in zip(remaining[1:-2], remaining[2:-1]):
        assert b / a == pytest.approx(0.8)
    assert max(s) == 0.7  # never overshoots


def test_linear_clips_to_target():
    assert sparsity_schedule(0.25, "linear", 0.1) == pytest.approx([0.0, 0.1, 0.2, 0.25])


def test_explicit_list():
    assert sparsity_schedule(None, [0.2, 0.4, 0.6]) == [0.0, 0.2, 0.4, 0.6]
    assert sparsity_schedule(0.6, [0.2, 0.4, 0.6]) == [0.0, 0.2, 0.4, 0.6]


def test_zero_target_is_dense_only():
    assert sparsity_schedule(0.0, "geometric", 0.2) == [0.0]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((1.0, "geometric", 0.2), r"target_sparsity=1.0 is outside \[0, 1\)"),
        ((-0.1, "linear", 0.1), r"target_sparsity=-0.1 is outside"),
        ((0.5, "geometric", 0.0), r"rate=0.0 is outside \(0, 1\)"),
        ((0.5, "geometric", 1.0), r"rate=1.0 is outside"),
        ((0.5, "cubic", 0.2), r"schedule='cubic' is unknown"),
        ((None, [0.2, 0.2, 0.5], 0.2), r"not strictly increasing at index 1"),
        ((None, [0.5, 0.3], 0.2), r"not strictly increasing"),
        ((None, [0.5, 1.0], 0.2), r"schedule\[1\]=1.0 is outside"),
        ((None, [], 0.2), r"empty"),
        ((0.7, [0.2, 0.5], 0.2), r"differs from the explicit schedule's last value 0.5"),
        ((None, "linear", 0.1), r"target_sparsity is required"),
        (("abc", "linear", 0.1), r"not a number"),
    ],
)
def test_bad_schedules(args, match):
    with pytest.raises(ValueError, match=match):
        sparsity_schedule(*args)
