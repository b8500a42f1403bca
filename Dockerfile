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
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/streamtally"]
CMD ["run", "--config", "/etc/streamtally/streamtally.yaml"]
