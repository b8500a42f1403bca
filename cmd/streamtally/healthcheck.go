package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// cmdHealthcheck asks a running daemon's /readyz and fails unless it
// answers 200: a container health check for an image without shell or curl.
func cmdHealthcheck(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addr := fs.String("addr", "127.0.0.1:9090", "the daemon's metrics.addr")
	timeout := fs.Duration("timeout", 4*time.Second, "how long to wait for an answer")
	if err := fs.Parse(args); err != nil {
		return usageError(fmt.Sprintf("healthcheck: %v", err))
	}
	if len(*addr) > 0 && (*addr)[0] == ':' {
		*addr = "127.0.0.1" + *addr
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+*addr+"/readyz", nil)
	if err != nil {
		return usageError(fmt.Sprintf("healthcheck: %v", err))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: not ready (%s): %s", resp.Status, body)
	}
	fmt.Fprintf(stdout, "%s", body)
	return nil
}
