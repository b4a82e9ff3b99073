"""fastp2p benchmarks: ``bench/micro`` (pytest-benchmark); the end-to-end harnesses live in
``fastp2p.benchsuite`` (``python -m bench.run`` / ``fastp2p bench``; see README.md)."""
