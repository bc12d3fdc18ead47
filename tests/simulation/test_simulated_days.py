"""Whole simulated days on the emulator, with every invariant checked after every step.

`make test` plays a few days from a fixed seed; `make soak` plays many more. Each day is one test, named by its
seed and database, so a failure replays on its own (the failure message prints the command):

    SIM_SEED=<seed> SIM_EXAMPLES=1 SIM_BACKENDS=<sqlite|postgres> .venv/bin/python -m pytest tests/simulation -s

Environment: SIM_SEED (first seed), SIM_EXAMPLES (days), SIM_HOURS, SIM_EVENTS and SIM_TICK (the day's length, its
random events, the mean minutes between the scheduler's ticks), SIM_BACKENDS (databases the days cycle through;
`postgres` needs ELEVATION_TEST_POSTGRES_URL and is skipped without it), SIM_VERBOSE=1 (print every day's log),
SIM_SHRINK=1 (drop steps from a failing day while its first violation still happens; print the smallest day;
SIM_SHRINK=<text> shrinks towards the first violation whose invariant or kind contains the text),
SIM_REPORTS (a folder for each failing day's report and whole log; default: the test's tmp_path).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from elevation.devkit.emulator import AwsEmulator

from .databases import Databases
from .driver import DayResult, Simulation
from .plan import Plan, draw_plan
from .soak import RESULTS

SEED = int(os.environ.get("SIM_SEED", "20300603"))
EXAMPLES = int(os.environ.get("SIM_EXAMPLES", "3"))
HOURS = float(os.environ.get("SIM_HOURS", "12"))
EVENTS = int(os.environ.get("SIM_EVENTS", "100"))
TICK = float(os.environ.get("SIM_TICK", "12"))
BACKENDS = [name.strip() for name in os.environ.get("SIM_BACKENDS", "sqlite,sqlite,postgres").split(",") if name]
SHRINK = os.environ.get("SIM_SHRINK", "")

DAYS = [(SEED + offset, BACKENDS[offset % len(BACKENDS)]) for offset in range(EXAMPLES)]


# --- the days -----------------------------------------------------------------------------------------------


def replay_command(seed: int, backend: str) -> str:
    return (
        f"SIM_SEED={seed} SIM_EXAMPLES=1 SIM_BACKENDS={backend} SIM_HOURS={HOURS:g} SIM_EVENTS={EVENTS} "
        f"SIM_TICK={TICK:g} .venv/bin/python -m pytest tests/simulation -s"
    )


def shrink(emulator: AwsEmulator, plan: Plan, result: DayResult, databases: Databases, wanted: str) -> Plan | None:
    """Drop chunks of steps, then single steps, while the day still breaks the same way: the first violation
    whose invariant or signature contains `wanted` ("1": the day's first violation)."""
    chosen = [v for v in result.violations if wanted == "1" or wanted in v.invariant or wanted in v.signature]
    if not chosen:
        return None
    target = chosen[0].signature
    print(f"\nshrinking seed {plan.seed} while it breaks {target!r}", flush=True)
    last = max(v.step for v in result.violations if v.signature == target)
    current = Plan(plan.seed, plan.hours, [step for step in plan.steps if step.index <= last])
    chunk = max(len(current.steps) // 2, 1)
    while chunk >= 1:
        position = 0
        while position < len(current.steps):
            candidate = current.without({step.index for step in current.steps[position : position + chunk]})
            trial = Simulation(emulator, candidate, databases.fresh(plan.seed)).run()
            if any(v.signature == target for v in trial.violations):
                current = candidate
                print(f"shrink: {len(current.steps)} steps still break {target!r}", flush=True)
            else:
                position += chunk
        chunk //= 2
    return current


@pytest.mark.parametrize(("seed", "backend"), DAYS, ids=[f"seed-{seed}-{backend}" for seed, backend in DAYS])
def test_a_simulated_day_keeps_every_promise(
    seed: int, backend: str, emulator: AwsEmulator, workdir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    databases = Databases(request, backend, workdir)
    try:
        plan = draw_plan(seed, EVENTS, HOURS, TICK)
        result = Simulation(emulator, plan, databases.fresh(seed)).run()
        RESULTS.append(result)
        if os.environ.get("SIM_VERBOSE") == "1":
            print("\n".join(result.log))
        if result.ok:
            return
        report = result.report(replay_command(seed, backend))
        folder = Path(os.environ["SIM_REPORTS"]) if os.environ.get("SIM_REPORTS") else tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        whole_day = folder / f"day-{seed}-{backend}.txt"
        whole_day.write_text(report + "\n\nthe whole day:\n" + "\n".join(result.log) + "\n", encoding="utf-8")
        if SHRINK:
            smallest = shrink(emulator, plan, result, databases, SHRINK)
            if smallest is not None:
                print("\nthe smallest day found that still breaks it:\n" + "\n".join(s.describe() for s in smallest.steps))
        pytest.fail(f"{report}\n(the whole day's log: {whole_day})", pytrace=False)
    finally:
        databases.remove_all()
