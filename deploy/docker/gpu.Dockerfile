# syntax=docker/dockerfile:1
# Arbor GPU image: the same binaries built with the CUDA backend
# (-DARBOR_CUDA=ON) in the CUDA devel image, then copied with their shared
# libraries onto the CUDA runtime image (which carries libcudart and cuBLAS;
# the NVIDIA container toolkit mounts the host's libcuda). Non-root, no
# compiler, no sources, no models: mount them at /models (--model=/models/NAME).
# Build with deploy/docker/build.sh gpu (context: the repository root).
ARG CUDA_VERSION=13.0.0
ARG CUDA_DISTRO=ubuntu24.04

FROM nvidia/cuda:${CUDA_VERSION}-devel-${CUDA_DISTRO} AS build
RUN apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      cmake ninja-build g++ pkg-config ca-certificates \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      libabsl-dev prometheus-cpp-dev libre2-dev nlohmann-json3-dev libopenblas-dev libssl-dev \
      libcpp-httplib-dev && \
    rm -rf /var/lib/apt/lists/*
COPY . /src
ARG ARBOR_VERSION=dev
# Hopper (sm_90a, the tuned kernels) and Ampere (sm_80); see docs/KERNELS.md.
ARG CUDA_ARCHITECTURES="90a;80"
RUN cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DARBOR_CUDA=ON \
      -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc \
      -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES}" \
      -DARBOR_BUILD_TESTS=OFF -DARBOR_BUILD_BENCH=OFF -DARBOR_BUILD_VERSION="${ARBOR_VERSION}" && \
    cmake --build /build --target arbor-coordinator arbor-worker arbor-verifier arbor-allinone arborctl && \
    /src/deploy/docker/collect_runtime.sh /build /out

# `runtime` (not `base`): it has cuBLAS, which the CUDA backend links.
FROM nvidia/cuda:${CUDA_VERSION}-runtime-${CUDA_DISTRO} AS runtime
COPY --from=build /out/usr/local/bin/ /usr/local/bin/
COPY --from=build /out/usr/local/lib/arbor/ /usr/local/lib/arbor/
COPY --from=build /out/arbor-ld.so.conf /etc/ld.so.conf.d/arbor.conf
RUN ldconfig && \
    groupadd --system --gid 10001 arbor && \
    useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin arbor && \
    mkdir -p /models
# The toolkit exposes the GPUs the pod requested; compute is all Arbor uses.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/arbor-allinone"]
CMD ["--host=0.0.0.0", "--port=50051", "--metrics_host=0.0.0.0", "--metrics_port=9090", \
     "--backend=cuda", \
     "--model=/models/policy", "--reward_model=/models/prm"]
