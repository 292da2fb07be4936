# syntax=docker/dockerfile:1
# hone-operator for people with Docker: `docker build -f images/operator.Dockerfile .`
# Without a Docker daemon, hack/images/build.sh builds the same image (layers:
# base, C/C++ runtime, binary) and imports it into the
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
    cargo build --release --locked -p hone-operator --bin hone-operator && \
    install -D target/release/hone-operator /out/hone-operator

FROM debian:bookworm-slim
RUN groupadd -g 65532 nonroot && useradd -u 65532 -g 65532 -d /home/nonroot -m -s /usr/sbin/nologin nonroot
COPY --from=build /out/hone-operator /usr/local/bin/hone-operator
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/hone-operator"]
