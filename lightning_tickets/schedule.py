"""Sparsity schedules: which sparsity each pruning round trains at.

Round 0 always trains dense (sparsity 0). Round ``r >= 1`` trains at ``schedule[r]``. The last round trains exactly at
the target sparsity (the last step is clipped to it and never overshoots).

Example:
    >>> sparsity_schedule(0.5, "geometric", rate=0.2)
    [0.0, 0.2, 0.36, 0.488, 0.5]
    >>> sparsity_schedule(0.3, "linear", rate=0.1)
    [0.0, 0.1, 0.2, 0.3]
    >>> sparsity_schedule(None, [0.2, 0.5])
    [0.0, 0.2, 0.5]
"""

from __future__ import annotations

from collections.abc import Sequence

SCHEDULES = ("geometric", "linear")
_EPS = 1e-9


def _check_fraction(name: str, value: float, *, low_open: bool, hint: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a number; {hint}") from None
    ok = (0.0 < value < 1.0) if low_open else (0.0 <= value < 1.0)
    if not ok:
        bounds = "(0, 1)" if low_open else "[0, 1)"
        raise ValueError(f"{name}={value!r} is outside {bounds}; {hint}")
    return value


def sparsity_schedule(
    target_sparsity: float | None,
    schedule: str | Sequence[float] = "geometric",
    rate: float = 0.2,
) -> list[float]:
    """Return the sparsity of every round, round 0 (dense) first.

    Args:
        target_sparsity: final sparsity in ``[0, 1)``. With an explicit list it may be ``None`` (the list's last value)
            or must equal the list's last value.
        schedule: ``"geometric"`` prunes ``rate`` of the *remaining* weights each round (open_lth);
            ``"linear"`` prunes ``rate`` of the *original* weights each round (the paper, BERT-Tickets);
            or an explicit strictly increasing list of sparsities in ``(0, 1)``.
        rate: fraction pruned per round, in ``(0, 1)``; ignored for an explicit list.

    Raises:
        ValueError: naming the bad value and the accepted range.
    """
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ValueError(
                f"schedule={schedule!r} is unknown; use 'geometric', 'linear' or an increasing list of sparsities "
                "such as [0.2, 0.4, 0.6]"
            )
        if target_sparsity is None:
            raise ValueError(f"target_sparsity is required with schedule={schedule!r}; pass e.g. target_sparsity=0.7")
        target = _check_fraction("target_sparsity", target_sparsity, low_open=False, hint="pass e.g. 0.7 for 70%")
        rate = _check_fraction("rate", rate, low_open=True, hint="pass e.g. rate=0.2 to prune 20% per round")
        out = [0.0]
        r = 1
        while out[-1] < target - _EPS:
            s = 1.0 - (1.0 - rate) ** r if schedule == "geometric" else r * rate
            s = round(s, 12)
            out.append(min(s, target))
            r += 1
        return out
    values = list(schedule)
    if not values:
        raise ValueError("schedule=[] is empty; give at least one sparsity, e.g. [0.5]")
    checked = [
        _check_fraction(f"schedule[{i}]", v, low_open=True, hint="explicit sparsities must lie in (0, 1)")
        for i, v in enumerate(values)
    ]
    for i in range(1, len(checked)):
        if checked[i] <= checked[i - 1]:
            raise ValueError(
                f"schedule={values} is not strictly increasing at index {i} ({checked[i - 1]} -> {checked[i]}); "
                "sort it and remove duplicates"
            )
    if target_sparsity is not None:
        target = _check_fraction("target_sparsity", target_sparsity, low_open=False, hint="pass e.g. 0.7 for 70%")
        if abs(target - checked[-1]) > _EPS:
            raise ValueError(
                f"target_sparsity={target_sparsity} differs from the explicit schedule's last value {checked[-1]}; "
                "make them equal or pass target_sparsity=None"
            )
    return [0.0, *checked]
