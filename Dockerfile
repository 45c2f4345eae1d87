# unibusd and the unibus CLI, built from this repository.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin unibusd --bin unibus

FROM debian:bookworm-slim
COPY --from=build /src/target/release/unibusd /src/target/release/unibus /usr/local/bin/
USER 65534:65534
ENTRYPOINT ["unibusd"]
CMD ["run"]
