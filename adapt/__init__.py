"""Test-time training (offline and online), baselines and evaluation."""
