"""End-to-end harness: supervisor, network namespaces, TCP proxy, recorders and checker."""
