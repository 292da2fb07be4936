# syntax=docker/dockerfile:1
# hone-predictor for people with Docker: `docker build -f images/predictor.Dockerfile .`
# Without a Docker daemon, hack/images/build.sh builds the same image (layers:
# base, C/C++ runtime, libtorch (CPU), binary) and imports it into the
# local cluster's containerd. Versions: hack/versions.env (TORCH_VERSION).
ARG TORCH_VERSION=2.13.0

FROM rust:1.95-bookworm AS build
ARG TORCH_VERSION
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv && rm -rf /var/lib/apt/lists/*
# tch links the libtorch of the torch wheel (LIBTORCH_USE_PYTORCH).
RUN python3 -m venv /venv && /venv/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}"
ENV PATH=/venv/bin:$PATH LIBTORCH_USE_PYTORCH=1
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    cargo build --release --locked -p hone-predictor --bin hone-predictor && \
    install -D target/release/hone-predictor /out/hone-predictor
# Only what the binary loads: libtorch_cpu, libc10, libgomp and the two CUDA
# libraries libtorch_cpu.so needs at load time; not the CUDA stack.
RUN set -eux; t=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))'); \
    mkdir -p /out/libtorch; \
    cp -L "$t/lib/libtorch_cpu.so" "$t/lib/libc10.so" "$t/lib/libgomp.so.1" /out/libtorch/; \
    cp -L "$t/../nvidia/cu13/lib/libcudart.so.13" "$t/../nvidia/cu13/lib/libcupti.so.13" /out/libtorch/ 2>/dev/null || true

FROM debian:bookworm-slim
# libtorch first: a layer of its own that only changes with TORCH_VERSION.
COPY --from=build /out/libtorch/ /opt/libtorch/lib/
ENV LD_LIBRARY_PATH=/opt/libtorch/lib
RUN groupadd -g 65532 nonroot && useradd -u 65532 -g 65532 -d /home/nonroot -m -s /usr/sbin/nologin nonroot
COPY --from=build /out/hone-predictor /usr/local/bin/hone-predictor
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/hone-predictor"]
