"""What runs, measures and ships the course: the `mmlib` command and its commands, the benches
and the spread runs behind them, `zoo prepare`'s scheduler, the environment check (doctor) and
the notebook runner. A learner never needs to read it; nothing outside this folder imports it
(tests/test_layers.py checks)."""
