"""The days played in this session, summed up at the end (what `make soak` prints, and BENCHMARKS.md records)."""

from __future__ import annotations

import os
from collections import Counter

from .driver import DayResult

RESULTS: list[DayResult] = []


def summary_lines() -> list[str]:
    """Days played, violations found, and for each kind of violation the days (seeds) that showed it."""
    if not RESULTS:
        return []
    violations = sum(len(result.violations) for result in RESULTS)
    failing = [result for result in RESULTS if not result.ok]
    seconds = sum(result.seconds for result in RESULTS)
    steps = sum(len(result.plan.steps) for result in RESULTS)
    lines = [
        f"simulated days: examples run {len(RESULTS)} ({steps} planned steps, {seconds:.0f}s), "
        f"days with violations {len(failing)}, invariant violations {violations}",
    ]
    kinds: dict[tuple[str, str], list[int]] = {}
    for result in RESULTS:
        for violation in result.violations:
            seeds = kinds.setdefault((violation.invariant, violation.signature), [])
            if result.seed not in seeds:
                seeds.append(result.seed)
    counts = Counter({key: sum(1 for r in RESULTS for v in r.violations if (v.invariant, v.signature) == key)
                      for key in kinds})
    if failing and os.environ.get("SIM_REPORTS"):
        lines.append(f"  each failing day's report and log: {os.environ['SIM_REPORTS']}/day-<seed>-<database>.txt")
    for (invariant, signature), seeds in sorted(kinds.items(), key=lambda item: -len(item[1])):
        shown = ", ".join(str(seed) for seed in seeds[:5]) + (" ..." if len(seeds) > 5 else "")
        lines.append(
            f"  {invariant}: {signature}: {counts[(invariant, signature)]} in {len(seeds)} day(s), seeds {shown}"
        )
    return lines
