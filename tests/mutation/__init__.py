"""Tests that kill the surviving mutants of the safety-critical rules (make mutate)."""
