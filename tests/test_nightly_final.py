"""An audit is final only once no event of the session can still arrive, by the real clock, not the night's end."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import sqlalchemy as sa

from elevation.access.grants import run_grants
from elevation.access.intake import run_intake
from elevation.access.revocations import run_revocations
from elevation.devkit.world import nightly_sections
from elevation.extract.location import resolve_location
from elevation.extract.manifest import NightManifest, write_manifest
from elevation.nightly import run_audit
from elevation.store.tables import audits


def test_a_night_audited_before_it_is_over_is_final_only_for_windows_closed_by_the_real_clock(
    configure, tmp_path, file_request, make_runtime, engine
):
    configure(nightly_sections(tmp_path))  # delivery margin: the default 15 minutes
    day = (datetime.now(UTC) - timedelta(days=1)).date()
    at = lambda hour, minute=0: datetime.combine(day, time(0), tzinfo=UTC) + timedelta(hours=hour, minutes=minute)  # noqa: E731
    # PowerUserAccess credentials last 4 hours after the revoke: the audit windows close at 13:01, 19:01, 21:01.
    ids = {
        name: file_request(requester="alice", account_id="media-stg", permission_set="PowerUserAccess",
                           start_at=at(hour), duration_minutes=60, status="approved", approver="bob")
        for name, hour in (("morning", 8), ("afternoon", 14), ("evening", 16))
    }
    for moment in (at(8), at(9, 1), at(14), at(15, 1), at(16), at(17, 1)):
        runtime = make_runtime(as_of=moment, clock=lambda moment=moment: moment)
        run_intake(runtime)
        run_grants(runtime)
        run_revocations(runtime)

    # The night was extracted (its manifest says so; its sessions did nothing): the audit judges states, not data.
    filesystem, base = resolve_location(tmp_path / "cloudtrail")
    write_manifest(filesystem, base, day, NightManifest(night=day.isoformat(), source="s3",
                                                        listed_at=at(24, 20).isoformat(), read_start="", read_end=""))

    def audited(clock: datetime) -> dict[str, str]:
        summary = run_audit(make_runtime(as_of=clock, clock=lambda: clock), day)
        with engine.connect() as conn:
            states = {row["request_id"]: row["state"] for row in conn.execute(sa.select(audits)).mappings()}
        assert {name: summary.sessions[str(ids[name])]["state"] for name in ids} == {
            name: states[ids[name]] for name in ids}
        return {name: states[ids[name]] for name in ids}

    # Today's night, triggered at 19:07: every session has ended, but not every window is closed.
    assert audited(at(19, 7)) == {
        "morning": "final",  # closed at 13:01, long delivered
        "afternoon": "provisional",  # closed at 19:01: events may still arrive until 19:16
        "evening": "provisional",  # credentials still valid until 21:01
    }
    # After the night, the same night's audit makes them final.
    assert audited(at(24, 30)) == {"morning": "final", "afternoon": "final", "evening": "final"}
