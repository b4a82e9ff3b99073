"""fastp2p benchmarks: ``bench/micro`` (pytest-benchmark) and ``bench/e2e`` (see README.md)."""
