"""fastp2p.proto.yamux."""
