# syntax=docker/dockerfile:1
#
# gitmesh in a container: the static binary and the CA certificates, nothing
# else (no shell, no package manager), running as 65532:65532.
#
#   docker build -t gitmesh .
#   docker run -d --name gitmesh -v gitmesh-state:/var/lib/gitmesh \
#     -p 5678:5678 -p 127.0.0.1:5681:5681 gitmesh \
#     serve --repo https://git.example.com/platform/mesh.git --path policies
#
# One replica per state volume: see "Running gitmesh in a container" in the
# README.

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ENV CGO_ENABLED=0
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags='-s -w' -o /out/gitmesh ./cmd/gitmesh
# The state directory, owned by the user the binary runs as, and that user's
# name for whatever looks it up.
RUN mkdir -p /out/rootfs/var/lib/gitmesh /out/rootfs/etc && \
    chmod 0700 /out/rootfs/var/lib/gitmesh && \
    echo 'nonroot:x:65532:65532:gitmesh:/var/lib/gitmesh:/sbin/nologin' > /out/rootfs/etc/passwd && \
    echo 'nonroot:x:65532:' > /out/rootfs/etc/group

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/rootfs/etc/passwd /out/rootfs/etc/group /etc/
COPY --from=build --chown=65532:65532 /out/rootfs/var/lib/gitmesh /var/lib/gitmesh
COPY --from=build /out/gitmesh /gitmesh
# Every serve flag has a GITMESH_* variable; a flag on the command line wins.
# Inside the container the ports listen on every interface: publish them
# with care (docker run -p 127.0.0.1:5681:5681 keeps the API on the host).
ENV GITMESH_STATE_DIR=/var/lib/gitmesh \
    GITMESH_XDS_ADDRESS=:5678 \
    GITMESH_API_ADDRESS=:5681 \
    GITMESH_LOG_FORMAT=json \
    HOME=/var/lib/gitmesh
USER 65532:65532
WORKDIR /var/lib/gitmesh
VOLUME ["/var/lib/gitmesh"]
# 5678: xDS (ADS over gRPC); 5681: the HTTP API (/status, /metrics,
# /healthz, /readyz, webhooks).
EXPOSE 5678 5681
STOPSIGNAL SIGTERM
LABEL org.opencontainers.image.title="gitmesh" \
      org.opencontainers.image.description="GitOps control plane for Kuma-style service-mesh policy" \
      org.opencontainers.image.source="https://github.com/gitmesh/gitmesh"
ENTRYPOINT ["/gitmesh"]
CMD ["serve", "--help"]
