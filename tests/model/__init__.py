"""Model-based tests: random sequences of callers, containers, clocks, operators, provider
behaviours and faults, driven against the real handlers on moto and the sandbox's token
endpoints, each step checked against a reference model of what tokenvend's promises allow.

- world.py: the containers (the real vend and provider functions, each with its own memory,
  AWS clients and clock), the virtual reference clock, fault injection, what is recorded;
- reference.py: the reference model and its invariants;
- machine.py: the rules and the four state machines built from them;
- test_machine.py: `make test` runs a fixed sample of three machines (about a minute);
  `make soak` runs random samples of all four for about ten minutes;
- test_regressions.py: every failure found, replayed as its minimal sequence.

A failing run prints the sequence as Python (`state = ClockMachine()`, `state.setup(...)`,
one line per step). Pasted into a test of test_regressions.py, it replays with every
invariant checked after every step.

Settings, from the environment:
- TOKENVEND_MODEL_EXAMPLES, TOKENVEND_MODEL_STEPS: the size of the fixed sample;
- TOKENVEND_MODEL_SHRINK=1: shrink a failure found by the fixed sample (minutes: run pytest
  with `-o timeout=900`);
- TOKENVEND_MODEL_MAX_OFFSET: how far container clocks may be off the providers' (30 s);
- TOKENVEND_MODEL_AVOID: what to leave out while a known defect is being fixed
  (machine.AVOID), so that the run can find the others;
- TOKENVEND_SOAK=1 (make soak), TOKENVEND_SOAK_SECONDS (600), TOKENVEND_SOAK_EXAMPLES and
  TOKENVEND_SOAK_STEPS (per sample), TOKENVEND_SOAK_SHRINK_SECONDS (120 per failure).
"""
