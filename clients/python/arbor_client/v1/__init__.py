"""Generated arbor.v1 messages and stubs (common, generator, verifier, reasoning);
regenerate with clients/python/generate_stubs.py."""
