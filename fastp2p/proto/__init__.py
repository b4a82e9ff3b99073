"""fastp2p.proto."""
