"""The access lifecycle: intake and policy, grants and revocations, and reconcile (what exists against the record)."""
