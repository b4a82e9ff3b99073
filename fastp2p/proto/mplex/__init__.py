"""fastp2p.proto.mplex."""
