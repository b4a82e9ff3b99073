"""fastp2p.testing."""
