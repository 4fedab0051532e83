# syntax=docker/dockerfile:1
#
# obmux image: a static binary on distroless (default) or scratch.
#
#   docker build -t obmux .
#   docker build --build-arg VERSION=$(git describe --tags --always) -t obmux .
#   docker build --build-arg RUNTIME_IMAGE=scratch -t obmux:scratch .
#
# Ports: 8080 the upstream's reverse-WS connection (OBMUX_UPSTREAM_LISTEN),
# 9108 /healthz /readyz /metrics (OBMUX_METRICS_LISTEN); 3001 only when the
# forward-WS server is turned on with OBMUX_FORWARD_LISTEN=:3001 (publish it
# yourself then). deploy/test-image.sh builds and runs this file for real.

ARG GO_IMAGE=golang:1.26-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
WORKDIR /src
# Passed through when set (e.g. the host's `go env GOPROXY`); empty means Go's defaults.
ARG GOPROXY
ARG GOFLAGS
# The same cache paths whatever GO_IMAGE sets.
ENV CGO_ENABLED=0 GOMODCACHE=/cache/gomod GOCACHE=/cache/gobuild
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/cache/gomod \
    go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/cache/gomod \
    --mount=type=cache,target=/cache/gobuild \
    go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/obmux ./cmd/obmux

FROM ${RUNTIME_IMAGE}
# CA certificates so that wss:// targets work on scratch too (distroless has the same file).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/obmux /obmux
# distroless's "nonroot" user; numeric, so that it also holds on scratch (no /etc/passwd).
USER 65532:65532
EXPOSE 8080 9108
# /readyz: 200 once the upstream is connected and the self_id known. No
# --start-period: NapCat may wait for a QR-code login for minutes, and until
# it connects "unhealthy" is the truth.
HEALTHCHECK --interval=15s --timeout=5s --retries=3 CMD ["/obmux", "healthcheck"]
ENTRYPOINT ["/obmux"]
