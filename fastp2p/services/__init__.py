"""fastp2p.services."""
