"""Typed clients of arbor.v1.Reasoning: Client (blocking) and AsyncClient
(asyncio, grpc.aio), one channel each; thread-safe as grpc channels are.

A request is a question, a strategy name and its parameters by the proto's
own field names (n, beam_width, selection, ...; enums by short name such as
"majority_vote"), sampling, stop rules and a budget; see build_request.
Results and stream events are frozen dataclasses; a failed call raises an
ArborError subclass carrying the gRPC status code, its details and the field
the coordinator named.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, AsyncIterator, Iterator, Mapping, Optional, Sequence, Tuple, Union

import grpc

from arbor_client.health import health_pb2, health_pb2_grpc
from arbor_client.v1 import reasoning_pb2, reasoning_pb2_grpc

STRATEGIES = ("greedy", "best_of_n", "beam_search", "dvts", "particle_filter", "particle_gibbs",
              "mcts", "auto")


# --------------------------------------------------------------------------- errors

class ArborError(Exception):
    """A failed call: `code` (grpc.StatusCode), `details` (the server's message)
    and `field`, the request field it names ("beam_search.n"), or None."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__("%s: %s" % (code.name, details))
        self.code = code
        self.details = details
        self.field = _field_of(details or "")


def _field_of(details: str) -> Optional[str]:
    """The field a "field: problem" message names ("beam_search.n (6) must ...")."""
    match = re.match(r"([A-Za-z_][A-Za-z0-9_.\[\]]*)(:| \(| has | must | )", details)
    if not match:
        return None
    token, separator = match.group(1), match.group(2)
    if separator != " " or any(c in token for c in "._["):
        return token
    return None


class InvalidArgumentError(ArborError):
    """A bad request field (INVALID_ARGUMENT); `field` names it."""


class FailedPreconditionError(ArborError):
    """The request needs what this deployment lacks, e.g. a reward model."""


class ResourceExhaustedError(ArborError):
    """The coordinator is at capacity (RESOURCE_EXHAUSTED): retry later."""


class UnavailableError(ArborError):
    """No healthy worker serves the model, or the server is unreachable or stopping."""


class DeadlineExceededError(ArborError):
    """The call's timeout passed (e.g. while the job waited in the queue)."""


class JobCancelledError(ArborError):
    """The job was cancelled (CANCELLED)."""


class UnauthenticatedError(ArborError):
    """The coordinator requires a bearer token and got none or a wrong one."""


_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: JobCancelledError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
}


def tls_credentials(ca_file: Optional[str] = None, cert_file: Optional[str] = None,
                    key_file: Optional[str] = None) -> grpc.ChannelCredentials:
    """TLS channel credentials from PEM files: the CA that verifies the server
    (None: the system roots) and, for servers requiring mutual TLS, a client
    certificate and its key."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("tls_credentials: a client certificate needs its key, and a key its "
                         "certificate")

    def read(path):
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(root_certificates=read(ca_file),
                                        private_key=read(key_file),
                                        certificate_chain=read(cert_file))


def _metadata(token: Optional[str]):
    return (("authorization", "Bearer " + token),) if token else None


def _error(e: grpc.RpcError) -> ArborError:
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = e.details() if hasattr(e, "details") else str(e)
    return _ERRORS.get(code, ArborError)(code, details or "")


# --------------------------------------------------------------------------- results

@dataclasses.dataclass(frozen=True)
class AutoChoice:
    """What strategy auto measured on its first round and chose
    (arbor.v1.AutoChoice): band easy/medium/hard, strategy stop/best_of_n/
    beam_search with n more samples or beams."""
    band: str = ""
    strategy: str = ""
    n: int = 0
    first_round_samples: int = 0
    agreement: float = 0.0
    mean_score: float = 0.0
    difficulty: float = 0.0


@dataclasses.dataclass(frozen=True)
class Usage:
    """What a job spent (arbor.v1.Usage): tokens, calls, time; the certainty
    probe's counts; tournament selection's compare calls, pairs, rounds and
    whether the budget made it fall back to the majority vote; auto_choice
    (None unless the job was strategy auto)."""
    generated_tokens: int = 0
    prefill_tokens: int = 0
    prefix_cache_hit_tokens: int = 0
    reward_tokens: int = 0
    reward_calls: int = 0
    worker_calls: int = 0
    retries: int = 0
    wall_time_ms: int = 0
    steps: int = 0
    reward_cache_hit_tokens: int = 0
    worker_queue_us: int = 0
    worker_compute_us: int = 0
    verifier_queue_us: int = 0
    verifier_compute_us: int = 0
    network_us: int = 0
    coordinator_us: int = 0
    reserve_generated_tokens: int = 0
    reserve_finished_branches: int = 0
    shaped_steps: int = 0
    probes: int = 0
    probe_generated_tokens: int = 0
    certain_branches: int = 0
    compare_calls: int = 0
    compared_pairs: int = 0
    tournament_rounds: int = 0
    tournament_fallback: bool = False
    auto_choice: Optional[AutoChoice] = None

    @classmethod
    def from_proto(cls, usage) -> "Usage":
        names = {f.name for f in dataclasses.fields(cls)} - {"auto_choice"}
        values = {f.name: getattr(usage, f.name) for f in usage.DESCRIPTOR.fields
                  if f.name in names}
        if usage.HasField("auto_choice"):
            a = usage.auto_choice
            values["auto_choice"] = AutoChoice(**{f.name: getattr(a, f.name)
                                                  for f in dataclasses.fields(AutoChoice)})
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One solution: its text and steps, per-step rewards, aggregated score."""
    text: str
    steps: Tuple[str, ...]
    step_scores: Tuple[float, ...]
    score: float
    answer: str
    votes: int
    logprob: float
    finished: bool
    num_tokens: int

    @classmethod
    def from_proto(cls, c) -> "Candidate":
        return cls(text=c.text, steps=tuple(c.steps), step_scores=tuple(c.step_scores),
                   score=c.score, answer=c.answer, votes=c.votes, logprob=c.logprob,
                   finished=c.finished, num_tokens=c.num_tokens)


@dataclasses.dataclass(frozen=True)
class SolveResult:
    """A finished job: the selected answer and text, the ranked candidates
    (best first), the usage and why the search stopped."""
    job_id: str
    answer: str
    text: str
    candidates: Tuple[Candidate, ...]
    usage: Usage
    budget_exhausted: bool
    exhausted_by: str
    strategy: str
    worker: str
    verifier: str
    stop_reason: str = ""
    proto: Any = dataclasses.field(repr=False, compare=False, default=None)

    @classmethod
    def from_proto(cls, r) -> "SolveResult":
        return cls(job_id=r.job_id, answer=r.answer, text=r.text,
                   candidates=tuple(Candidate.from_proto(c) for c in r.candidates),
                   usage=Usage.from_proto(r.usage), budget_exhausted=r.budget_exhausted,
                   exhausted_by=r.exhausted_by, strategy=r.strategy, worker=r.worker,
                   verifier=r.verifier, stop_reason=r.stop_reason, proto=r)


@dataclasses.dataclass(frozen=True)
class Accepted:
    """First stream event: the job started."""
    job_id: str
    strategy: str
    worker: str


@dataclasses.dataclass(frozen=True)
class Step:
    """One strategy iteration: the live search state."""
    iteration: int
    live_branches: int
    finished_branches: int
    best_score: float
    best_text: str
    branch_scores: Tuple[float, ...]
    usage: Usage


Event = Union[Accepted, Step, SolveResult]


def _event(e) -> Event:
    kind = e.WhichOneof("event")
    if kind == "accepted":
        a = e.accepted
        return Accepted(job_id=a.job_id, strategy=a.strategy, worker=a.worker)
    if kind == "step":
        s = e.step
        return Step(iteration=s.iteration, live_branches=s.live_branches,
                    finished_branches=s.finished_branches, best_score=s.best_score,
                    best_text=s.best_text, branch_scores=tuple(s.branch_scores),
                    usage=Usage.from_proto(s.usage))
    return SolveResult.from_proto(e.result)


# --------------------------------------------------------------------------- requests

@dataclasses.dataclass(frozen=True)
class Budget:
    """Compute caps of a job (arbor.v1.Budget); 0 is no cap."""
    max_generated_tokens: int = 0
    max_reward_tokens: int = 0
    max_reward_calls: int = 0
    max_steps: int = 0
    deadline_ms: int = 0
    # The anytime reserve of the tree strategies: None takes the default 0.2.
    reserve_fraction: Optional[float] = None
    finish_branches: int = 0


def _enum_value(field, value, where: str) -> int:
    if isinstance(value, int):
        return value
    values = {v.name: v.number for v in field.enum_type.values}
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", field.enum_type.name).upper() + "_"
    for name in (str(value), prefix + str(value).upper()):
        if name in values and values[name] != 0:
            return values[name]
    choices = [v.name[len(prefix):].lower() for v in field.enum_type.values if v.number != 0]
    raise ValueError("%s: unknown value %r; use one of %s" % (where, value, ", ".join(choices)))


def _set_message(message, value, where: str) -> None:
    """Sets a message parameter (certainty): True/False, an effort name such
    as "mid" (the message's `effort`), or a mapping of its fields."""
    if value is None or value is False:
        message.Clear()
        return
    message.SetInParent()
    if value is True:
        return
    if isinstance(value, str):
        value = {"effort": value}
    fields = {f.name: f for f in message.DESCRIPTOR.fields}
    for name, v in dict(value).items():
        if name not in fields:
            raise TypeError("%s has no field %r (it has: %s)" % (where, name, ", ".join(fields)))
        field = fields[name]
        if field.enum_type is not None:
            v = _enum_value(field, v, "%s.%s" % (where, name))
        if field.label == field.LABEL_REPEATED:
            getattr(message, name).extend(v)
        else:
            setattr(message, name, v)


def build_request(question: str, *, strategy: str = "best_of_n", model: str = "",
                  reward_model: str = "", chat_template: str = "", job_id: str = "",
                  max_tokens: Optional[int] = None, temperature: Optional[float] = None,
                  top_p: Optional[float] = None, top_k: Optional[int] = None,
                  seed: Optional[int] = None, step_delimiters: Optional[Sequence[str]] = None,
                  no_step_delimiter: bool = False, max_step_tokens: Optional[int] = None,
                  ignore_eos: bool = False,
                  budget: Union[Budget, Mapping[str, int], None] = None,
                  answer_pattern: str = "", max_candidates: Optional[int] = None,
                  **strategy_params: Any) -> "reasoning_pb2.SolveRequest":
    """The SolveRequest for `question`.

    strategy: greedy, best_of_n, beam_search, dvts, particle_filter,
    particle_gibbs (the filter's parameters flat), mcts or auto; its
    parameters go by the proto's field names (best_of_n: n, selection,
    aggregation, min_vote_fraction, certainty; beam_search: n, beam_width,
    num_iterations, lookahead, aggregation, certainty; auto: n,
    first_round_samples, easy_agreement, ...), enums by short name
    ("majority_vote", "min") or proto name. certainty (the Dynasor-style
    probe) takes an effort ("mild", "low", "mid", "high", "crazy"), True for
    the default, or a mapping of arbor.v1.Certainty's fields
    ({"effort": "high", "interval_tokens": 16}). max_tokens caps one solution
    (search-and-learn's max_tokens) and, unless max_step_tokens is given,
    one step. A parameter the strategy does not have raises TypeError; range
    checks are the coordinator's (InvalidArgumentError naming the field).
    """
    if strategy not in STRATEGIES:
        raise ValueError("strategy: unknown %r; use one of %s" % (strategy, ", ".join(STRATEGIES)))
    request = reasoning_pb2.SolveRequest(question=question, model=model, reward_model=reward_model,
                                         chat_template=chat_template, job_id=job_id,
                                         answer_extraction=reasoning_pb2.AnswerExtraction(
                                             pattern=answer_pattern))
    params = getattr(request, strategy)
    params.SetInParent()  # the oneof is set even with no parameters (greedy)
    fields = {f.name: f for f in params.DESCRIPTOR.fields}
    # particle_gibbs takes its filter's parameters flat (n, temperature, ...).
    inner = getattr(params, "filter", None) if strategy == "particle_gibbs" else None
    inner_fields = {f.name: f for f in inner.DESCRIPTOR.fields} if inner is not None else {}
    for name, value in strategy_params.items():
        target, where = params, strategy
        if name not in fields and name in inner_fields:
            target, where, field = inner, strategy + ".filter", inner_fields[name]
        elif name not in fields:
            raise TypeError("%s has no parameter %r (it has: %s)"
                            % (strategy, name, ", ".join(list(fields) + list(inner_fields))
                               or "none"))
        else:
            field = fields[name]
        if field.message_type is not None:
            _set_message(getattr(target, name), value, "%s.%s" % (where, name))
            continue
        if field.enum_type is not None:
            value = _enum_value(field, value, "%s.%s" % (where, name))
        setattr(target, name, value)
    if temperature is not None:
        request.sampling.temperature = temperature
    if top_p is not None:
        request.sampling.top_p = top_p
    if top_k is not None:
        request.sampling.top_k = top_k
    if seed is not None:
        request.seed = seed
    if max_tokens is not None:
        request.max_solution_tokens = max_tokens
        request.stop.max_step_tokens = min(max_tokens, 256)
    if step_delimiters is not None:
        request.stop.step_delimiters.extend(step_delimiters)
    if no_step_delimiter:
        request.stop.no_step_delimiter = True
    if max_step_tokens is not None:
        request.stop.max_step_tokens = max_step_tokens
    if ignore_eos:
        request.stop.ignore_eos = True
    if budget is not None:
        values = dataclasses.asdict(budget) if isinstance(budget, Budget) else dict(budget)
        values = {k: v for k, v in values.items() if v is not None}
        request.budget.CopyFrom(reasoning_pb2.Budget(**values))
    if max_candidates is not None:
        request.max_candidates = max_candidates
    return request


def _timeout(call_timeout, default):
    return call_timeout if call_timeout is not None else default


# --------------------------------------------------------------------------- clients

class Client:
    """Blocking client: `Client("localhost:50051").solve("...", strategy="beam_search", n=16)`.

    target: host:port of arbor-coordinator or arbor-allinone. credentials:
    grpc.ChannelCredentials for TLS (insecure without; see tls_credentials).
    token: the bearer token a coordinator started with --auth_token_file
    requires. timeout: default seconds per call (None: no deadline; the job's
    budget still bounds it).
    """

    def __init__(self, target: str = "localhost:50051", *,
                 credentials: Optional[grpc.ChannelCredentials] = None,
                 token: Optional[str] = None,
                 options: Optional[Sequence[Tuple[str, Any]]] = None,
                 timeout: Optional[float] = None):
        options = list(options or [])
        self._channel = (grpc.secure_channel(target, credentials, options) if credentials
                         else grpc.insecure_channel(target, options))
        self._stub = reasoning_pb2_grpc.ReasoningStub(self._channel)
        self._timeout = timeout
        self._metadata = _metadata(token)

    def solve(self, question: str, *, timeout: Optional[float] = None, **kwargs: Any) -> SolveResult:
        """Runs a job to completion (build_request has the parameters)."""
        request = build_request(question, **kwargs)
        try:
            reply = self._stub.Solve(request, timeout=_timeout(timeout, self._timeout),
                                     metadata=self._metadata)
        except grpc.RpcError as e:
            raise _error(e) from None
        return SolveResult.from_proto(reply)

    def solve_stream(self, question: str, *, timeout: Optional[float] = None,
                     **kwargs: Any) -> Iterator[Event]:
        """Yields Accepted, one Step per iteration, then the SolveResult.
        Leaving the loop early (or dropping the iterator) cancels the job."""
        request = build_request(question, **kwargs)
        call = self._stub.SolveStream(request, timeout=_timeout(timeout, self._timeout),
                                      metadata=self._metadata)
        try:
            for event in call:
                yield _event(event)
        except grpc.RpcError as e:
            raise _error(e) from None
        finally:
            call.cancel()  # no-op once the stream has ended

    def health(self, timeout: float = 10) -> bool:
        """Whether the server reports SERVING (grpc.health.v1)."""
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as e:
            raise _error(e) from None
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient:
    """asyncio client (grpc.aio): `await AsyncClient(target).solve(...)`,
    `async for event in client.solve_stream(...)`. Create it inside the
    event loop that uses it."""

    def __init__(self, target: str = "localhost:50051", *,
                 credentials: Optional[grpc.ChannelCredentials] = None,
                 token: Optional[str] = None,
                 options: Optional[Sequence[Tuple[str, Any]]] = None,
                 timeout: Optional[float] = None):
        options = list(options or [])
        self._channel = (grpc.aio.secure_channel(target, credentials, options) if credentials
                         else grpc.aio.insecure_channel(target, options))
        self._stub = reasoning_pb2_grpc.ReasoningStub(self._channel)
        self._timeout = timeout
        self._metadata = _metadata(token)

    async def solve(self, question: str, *, timeout: Optional[float] = None,
                    **kwargs: Any) -> SolveResult:
        request = build_request(question, **kwargs)
        try:
            reply = await self._stub.Solve(request, timeout=_timeout(timeout, self._timeout),
                                           metadata=self._metadata)
        except grpc.RpcError as e:
            raise _error(e) from None
        return SolveResult.from_proto(reply)

    async def solve_stream(self, question: str, *, timeout: Optional[float] = None,
                           **kwargs: Any) -> AsyncIterator[Event]:
        request = build_request(question, **kwargs)
        call = self._stub.SolveStream(request, timeout=_timeout(timeout, self._timeout),
                                      metadata=self._metadata)
        try:
            async for event in call:
                yield _event(event)
        except grpc.RpcError as e:
            raise _error(e) from None
        finally:
            call.cancel()

    async def health(self, timeout: float = 10) -> bool:
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as e:
            raise _error(e) from None
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


__all__ = ["STRATEGIES", "ArborError", "InvalidArgumentError", "FailedPreconditionError",
           "ResourceExhaustedError", "UnavailableError", "DeadlineExceededError",
           "JobCancelledError", "UnauthenticatedError", "Usage", "Candidate", "SolveResult",
           "Accepted", "Step", "Event", "Budget", "build_request", "tls_credentials", "Client",
           "AsyncClient"]
