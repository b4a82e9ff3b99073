"""End-to-end harness. The implementation is ``fastp2p.benchsuite`` (ships in the
wheel); this package re-exports it under the paths DESIGN.md section 5.10 names."""
