"""The end-to-end harness parts use the root conftest's fixtures (``topology``)."""
