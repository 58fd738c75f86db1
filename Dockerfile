# helmq container image: the five programs plus a real helm 3.
#
#   docker build -t helmq .
#   docker compose up --build          (see compose.yaml)
#
# Stages: "build" compiles the programs with the Debian -dev packages, "helm"
# fetches the official helm release tarball, the final stage carries only the
# runtime libraries, helm and the binaries, and runs as the non-root user helmq.

# ---------------------------------------------------------------- build stage
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        gcc make pkg-config libc6-dev \
        librdkafka-dev libavro-dev libpq-dev libuv1-dev libjansson-dev libssl-dev libhttp-parser-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the program targets need: the sources, and schemas/ + sql/ (and
# helmq-api's docs/openapi.json), which the Makefile embeds with tests/lib/embed.sh.
COPY Makefile ./
COPY worker/ worker/
COPY producer-cli/ producer-cli/
COPY schemas/ schemas/
COPY sql/ sql/
COPY tests/lib/embed.sh tests/lib/embed.sh
COPY docs/openapi.json docs/openapi.json
# `make all` would also build the C unit tests (tests/unit); build only the programs.
RUN make -j"$(nproc)" bin/helmq bin/helmq-worker bin/helmq-projector bin/helmq-broker bin/helmq-api \
 && strip --strip-debug bin/helmq bin/helmq-worker bin/helmq-projector bin/helmq-broker bin/helmq-api

# ----------------------------------------------------------------- helm stage
FROM debian:bookworm-slim AS helm
ARG HELM_VERSION=v3.17.3
# BuildKit sets TARGETARCH (amd64, arm64, ...); the classic builder uses the default.
ARG TARGETARCH=amd64
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /tmp/helm
RUN set -eu; \
    tgz="helm-${HELM_VERSION}-linux-${TARGETARCH}.tar.gz"; \
    curl -fsSLO "https://get.helm.sh/${tgz}"; \
    curl -fsSLO "https://get.helm.sh/${tgz}.sha256sum"; \
    sha256sum -c "${tgz}.sha256sum"; \
    tar -xzf "${tgz}" "linux-${TARGETARCH}/helm"; \
    install -m 0755 "linux-${TARGETARCH}/helm" /usr/local/bin/helm; \
    /usr/local/bin/helm version --short

# -------------------------------------------------------------- runtime stage
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        librdkafka1 libavro23 libpq5 libuv1 libjansson4 libssl3 libhttp-parser2.9 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=helm /usr/local/bin/helm /usr/local/bin/helm
COPY --from=build /src/bin/helmq /src/bin/helmq-worker /src/bin/helmq-projector /src/bin/helmq-broker /src/bin/helmq-api /usr/local/bin/
RUN groupadd --system --gid 10001 helmq \
 && useradd --system --uid 10001 --gid helmq --home-dir /home/helmq --create-home --shell /usr/sbin/nologin helmq
# helm keeps its cache/config/data under these; /tmp works whatever uid the
# container runs as (compose.yaml lets users pick their own uid so a 0600
# kubeconfig stays readable).
ENV HELM_CACHE_HOME=/tmp/helm/cache \
    HELM_CONFIG_HOME=/tmp/helm/config \
    HELM_DATA_HOME=/tmp/helm/data \
    HELMQ_HELM=/usr/local/bin/helm
USER helmq
WORKDIR /home/helmq
# No ENTRYPOINT: the command is the whole program line, so
#   docker compose run --rm -T worker helmq install -f - < command.json
# runs the producer CLI in the same image.
CMD ["helmq-worker"]
