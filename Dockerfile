# Build: a static binary, no cgo.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/streamtally ./cmd/streamtally \
 && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/loadgen ./cmd/loadgen

# Run: distroless static, non-root; nothing but the binaries and CA roots.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/streamtally /out/loadgen /usr/local/bin/
USER nonroot:nonroot
# 9090: /metrics and health of run and serve; 8080: serve's dashboard and API.
EXPOSE 9090 8080
STOPSIGNAL SIGTERM
# No shell or curl in the image: the binary asks its own /readyz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/streamtally", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/streamtally"]
CMD ["run", "--config", "/etc/streamtally/streamtally.yaml"]
