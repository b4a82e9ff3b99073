"""fastp2p._native."""
