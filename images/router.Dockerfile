# syntax=docker/dockerfile:1
# hone-router for people with Docker: `docker build -f images/router.Dockerfile .`
# Without a Docker daemon, hack/images/build.sh builds the same image (layers:
# base, C/C++ runtime, binary) and imports it into the local cluster's
# containerd. No libtorch: the router links no tch crate, so the build needs
# no torch wheel either.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    cargo build --release --locked -p hone-router --bin hone-router && \
    install -D target/release/hone-router /out/hone-router

FROM debian:bookworm-slim
RUN groupadd -g 65532 nonroot && useradd -u 65532 -g 65532 -d /home/nonroot -m -s /usr/sbin/nologin nonroot
COPY --from=build /out/hone-router /usr/local/bin/hone-router
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/hone-router"]
