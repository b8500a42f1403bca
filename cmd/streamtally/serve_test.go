package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/gateway"
)

const serveTestViews = `
source: {table: T}
views:
  - {name: by_platform, group_by: [platform], measures: {n: count}}
`

func TestServeRefusesToStartWithoutAnyAccessRule(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(serveTestViews), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := runCLI(context.Background(), []string{"serve", "--config", p}, &out, &errOut)
	if code != exitConfig || strings.Count(errOut.String(), "\n") != 1 || !strings.Contains(errOut.String(), "serve.public") {
		t.Fatalf("exit %d, stderr %q; want exit %d and one line naming serve.public", code, errOut.String(), exitConfig)
	}
}

// A token printed by `streamtally token` is accepted by the gateway for its
// views only.
func TestTokenCommandSignsTokensTheGatewayAccepts(t *testing.T) {
	secret := strings.Repeat("k", 40)
	t.Setenv("STREAMTALLY_SERVE_HMAC_SECRET", secret)
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(serveTestViews), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := runCLI(context.Background(), []string{"token", "--config", p, "--views", "by_platform", "--sub", "tenant-a", "--ttl", "1h"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	tok := strings.TrimSpace(out.String())
	auth := gateway.NewAuth(config.Serve{HMACSecret: secret})
	req := httptest.NewRequest("GET", "/v1/views/by_platform", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	g, err := auth.Check(req)
	if err != nil || !g.May("by_platform") || g.May("other") || !strings.Contains(g.Who, "tenant-a") {
		t.Fatalf("grant %+v, err %v", g, err)
	}

	errOut.Reset()
	if code := runCLI(context.Background(), []string{"token", "--config", p, "--views", "nope"}, &out, &errOut); code != exitConfig {
		t.Errorf("token for an unknown view: exit %d, want %d (%s)", code, exitConfig, errOut.String())
	}
}
