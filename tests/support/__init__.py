"""Test support, by concern: ``processes`` (Redis, workers, Flower, the CLI), ``cloud`` (fakecloud's API
and controls), ``audit`` (the secrets audit)."""
