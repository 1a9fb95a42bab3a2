"""MockRuntime: the in-memory runtime for tests and benchmarks, with fault injection."""
