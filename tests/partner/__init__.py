"""Tests of the reference partner app (`partner/`), run against its real HTTPS server."""
