"""Child processes the benchmarks start: kill -9 victims, appenders, shippers and drainers."""
