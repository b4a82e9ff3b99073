"""Tests of fastp2p integrations with other frameworks (Dask)."""
