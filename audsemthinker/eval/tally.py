"""What both benchmarks' scoring shares: percentages, report order, id checks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

KNOWN_ORDER = {"task": ("sound", "music", "speech"), "difficulty": ("easy", "medium", "hard")}


def pct(num: int, den: int) -> float | None:
    """A percentage, None for an empty denominator (a group with no item)."""
    return 100.0 * num / den if den else None


def ordered_groups(group: str, tallies: dict[str, list[int]]) -> list[str]:
    """A breakdown's keys in report order: the benchmark's own order first, then the rest."""
    known = KNOWN_ORDER.get(group, ())
    return [k for k in known if k in tallies] + sorted(k for k in tallies if k not in known)


def check_ids(items: list[Mapping], required: tuple[str, ...], bench: str) -> set[str]:
    """The items' ids; raises ValueError on a missing key or a repeated id."""
    seen: set[str] = set()
    for i, item in enumerate(items):
        missing = [k for k in required if k not in item]
        if missing:
            raise ValueError(f"{bench} item #{i} lacks keys {missing}; got {sorted(item)}")
        if item["id"] in seen:
            raise ValueError(f"{bench} item id {item['id']!r} occurs twice")
        seen.add(item["id"])
    return seen


def check_known(ids: set[str], given: Iterable, what: str) -> None:
    """Raise ValueError for outputs whose ids are not among the items (a mismatched file)."""
    unknown = sorted(str(k) for k in set(given) - ids)
    if unknown:
        raise ValueError(f"{len(unknown)} {what} for ids not among the items (e.g. {unknown[:3]}):"
                         " wrong benchmark file, split or version?")
