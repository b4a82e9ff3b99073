"""fastp2p.proto.noise."""
