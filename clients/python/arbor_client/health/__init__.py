"""Generated grpc.health.v1 messages and stub, as every Arbor server serves them;
regenerate with clients/python/generate_stubs.py."""
