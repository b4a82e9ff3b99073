"""fastp2p.transport."""
