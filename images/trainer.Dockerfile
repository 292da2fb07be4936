# syntax=docker/dockerfile:1
# hone-trainer for people with Docker: `docker build -f images/trainer.Dockerfile .`
# Without a Docker daemon, hack/images/build.sh builds the same image (layers:
# base, C/C++ runtime, libtorch (CPU), binary) and imports it into the
# local cluster's containerd. Versions: hack/versions.env (TORCH_VERSION).
ARG TORCH_VERSION=2.13.0
# cpu: libtorch's CPU libraries only (about 450 MB). cuda: the whole CUDA
# stack the torch wheel ships (about 3.7 GB), for GPU nodes:
#   docker build --build-arg VARIANT=cuda -f images/trainer.Dockerfile -t hone/trainer:cuda .
ARG VARIANT=cpu

FROM rust:1.95-bookworm AS build
ARG TORCH_VERSION
ARG VARIANT
# libgloo-dev: Gloo's headers for hone-dist's c10d shim (the wheel lacks them).
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv libgloo-dev && rm -rf /var/lib/apt/lists/*
# tch links the libtorch of the torch wheel (LIBTORCH_USE_PYTORCH).
RUN python3 -m venv /venv && /venv/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}"
ENV PATH=/venv/bin:$PATH LIBTORCH_USE_PYTORCH=1
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    cargo build --release --locked -p hone-trainer --bin hone-trainer && \
    install -D target/release/hone-trainer /out/hone-trainer
# cpu: only what the binary loads (libtorch_cpu, libc10, libgomp and the two
# CUDA libraries libtorch_cpu.so needs at load time). cuda: every library of
# torch and of the nvidia wheels; the binary opens libtorch_cuda.so at start.
RUN set -eux; t=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))'); \
    mkdir -p /out/libtorch; \
    if [ "$VARIANT" = cuda ]; then \
      cp -L "$t"/lib/*.so* /out/libtorch/; \
      find "$t/../nvidia" -path '*/lib/*.so*' -exec cp -L {} /out/libtorch/ \; ; \
    elif [ "$VARIANT" = cpu ]; then \
      cp -L "$t/lib/libtorch_cpu.so" "$t/lib/libc10.so" "$t/lib/libgomp.so.1" /out/libtorch/; \
      cp -L "$t/../nvidia/cu13/lib/libcudart.so.13" "$t/../nvidia/cu13/lib/libcupti.so.13" /out/libtorch/ 2>/dev/null || true; \
    else echo "VARIANT must be cpu or cuda, not $VARIANT" >&2; exit 1; fi

FROM debian:bookworm-slim
# libtorch first: a layer of its own that only changes with TORCH_VERSION.
COPY --from=build /out/libtorch/ /opt/libtorch/lib/
ENV LD_LIBRARY_PATH=/opt/libtorch/lib
# CA certificates: HTTPS to object storage (the HTTP client needs a root store).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
RUN groupadd -g 65532 nonroot && useradd -u 65532 -g 65532 -d /home/nonroot -m -s /usr/sbin/nologin nonroot
COPY --from=build /out/hone-trainer /usr/local/bin/hone-trainer
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/hone-trainer"]
