"""Randomized simulated days on the AWS emulator, with invariants checked after every step.

- `plan`: a day drawn from a seed before anything runs (requests, actions, hostile rows, faults, crashes, runs);
- `driver`: plays a plan against a fresh organization and queue, with a fake clock and killed workers;
- `observe`: what the database and Identity Center hold after a step, read without going through the system;
- `invariants`: the promises the system makes, one small named function each;
- `test_simulated_days`: `make test` (a fixed seed, a few days) and `make soak` (many days).
"""
