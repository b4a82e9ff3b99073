"""Integrations of fastp2p with other frameworks (optional extras)."""
