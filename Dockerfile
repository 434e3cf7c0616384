# The envroll operator image: a static binary on a distroless base, run as a
# non-root user, with no shell or package manager at run time.
#
#   docker build -t envroll/envroll:0.1.0 .
#
# `make image-binary` builds and checks the same binary (same target, same
# cargo flags) without a container engine.

FROM rust:1.95-bookworm AS build
# musl-gcc compiles the C and assembly parts of ring for the musl target.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
# Download the dependencies in their own layer: it is reused until Cargo.lock changes.
COPY Cargo.toml Cargo.lock ./
RUN cargo fetch --locked --target x86_64-unknown-linux-musl
COPY src ./src
RUN cargo build --release --locked --target x86_64-unknown-linux-musl

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="envroll" \
      org.opencontainers.image.description="Roll out workloads only when a ConfigMap or Secret change cannot reach the running process" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/envroll /envroll
USER 65532:65532
# /metrics, /healthz and /readyz
EXPOSE 8080
ENTRYPOINT ["/envroll"]
CMD ["run"]
