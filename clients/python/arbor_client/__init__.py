"""arbor-client: the Python client of Arbor's arbor.v1.Reasoning service.

    from arbor_client import Client
    with Client("localhost:50051") as client:
        result = client.solve("What is 7 * 8?", strategy="beam_search", n=16, beam_width=4,
                              max_tokens=512)
        print(result.answer, result.usage.generated_tokens)

The generated messages and stubs are arbor_client.v1 (common, generator,
verifier, reasoning) and arbor_client.health (grpc.health.v1).
"""
from arbor_client._client import (STRATEGIES, Accepted, ArborError, AsyncClient, AutoChoice, Budget,
                                  Candidate, Client, DeadlineExceededError, Event,
                                  FailedPreconditionError, InvalidArgumentError,
                                  JobCancelledError, ResourceExhaustedError, SolveResult, Step,
                                  UnauthenticatedError, UnavailableError, Usage, build_request,
                                  tls_credentials)

__version__ = "0.1.0"

__all__ = ["STRATEGIES", "Accepted", "ArborError", "AsyncClient", "AutoChoice", "Budget",
           "Candidate", "Client",
           "DeadlineExceededError", "Event", "FailedPreconditionError", "InvalidArgumentError",
           "JobCancelledError", "ResourceExhaustedError", "SolveResult", "Step",
           "UnauthenticatedError", "UnavailableError", "Usage", "build_request",
           "tls_credentials"]
