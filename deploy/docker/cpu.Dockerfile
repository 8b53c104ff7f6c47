# syntax=docker/dockerfile:1
# Arbor CPU image: every role's binary (arbor-coordinator, arbor-worker,
# arbor-verifier, arbor-allinone, arborctl) on the CPU backend, and the shared
# libraries they load; no compiler, no sources, no models. Models come from a
# volume mounted at /models (--model=/models/NAME). The `demo` target adds the
# bundled tiny models at /opt/arbor/models for the cpu-demo overlay.
# Build with deploy/docker/build.sh (context: the repository root).
ARG DEBIAN_RELEASE=bookworm

FROM debian:${DEBIAN_RELEASE} AS build
RUN apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      cmake ninja-build g++ pkg-config ca-certificates \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      libabsl-dev prometheus-cpp-dev libre2-dev nlohmann-json3-dev libopenblas-dev libssl-dev \
      libcpp-httplib-dev && \
    rm -rf /var/lib/apt/lists/*
COPY . /src
ARG ARBOR_VERSION=dev
RUN cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DARBOR_CUDA=OFF \
      -DARBOR_BUILD_TESTS=OFF -DARBOR_BUILD_BENCH=OFF -DARBOR_BUILD_VERSION="${ARBOR_VERSION}" && \
    cmake --build /build --target arbor-coordinator arbor-worker arbor-verifier arbor-allinone arborctl && \
    /src/deploy/docker/collect_runtime.sh /build /out

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
COPY --from=build /out/usr/local/ /usr/local/
COPY --from=build /out/arbor-ld.so.conf /etc/ld.so.conf.d/arbor.conf
# libopenblas picks its kernels at run time; libgomp/libgfortran come with it.
RUN ldconfig && \
    groupadd --system --gid 10001 arbor && \
    useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin arbor && \
    mkdir -p /models && chown root:root /models
# Numeric, so Pod Security `restricted` (runAsNonRoot) can verify it.
USER 10001:10001
WORKDIR /tmp
# gRPC (the manifests set --port per role) and /metrics.
EXPOSE 50051 9090
# SIGTERM drains: NOT_SERVING on health, new calls still served for
# --drain_delay_ms, then in-flight calls finish within --drain_grace_ms.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/arbor-allinone"]
CMD ["--host=0.0.0.0", "--port=50051", "--metrics_host=0.0.0.0", "--metrics_port=9090"]

FROM runtime AS demo
COPY --chown=root:root models/ /opt/arbor/models/
CMD ["--host=0.0.0.0", "--port=50051", "--metrics_host=0.0.0.0", "--metrics_port=9090", \
     "--model=/opt/arbor/models/policy", \
     "--reward_model=/opt/arbor/models/prm"]
