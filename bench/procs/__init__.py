"""Child processes the benchmarks start: victims for kill -9, appenders for contention."""
