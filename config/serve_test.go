package config_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamtally/streamtally/config"
)

const serveViews = `
source: {table: T}
views:
  - {name: by_platform, group_by: [platform], measures: {n: count}}
  - {name: by_country, group_by: [country], measures: {n: count}}
`

const tokenA = "tenant-a-0123456789abcdef0123456789abcdef"

func TestServeDefaults(t *testing.T) {
	clearEnv(t)
	s := load(t, serveViews).Serve
	if s.Addr != ":8080" || s.Public || s.HasAuth() || s.Heartbeat != 15*time.Second || s.ClientBuffer != 256 || s.History != 1024 || len(s.CORSOrigins) != 0 {
		t.Errorf("defaults: %+v", s)
	}
}

func TestServeTokensAndEnvironment(t *testing.T) {
	clearEnv(t)
	secret := strings.Repeat("s", 40)
	t.Setenv("STREAMTALLY_SERVE_HMAC_SECRET", secret)
	t.Setenv("STREAMTALLY_SERVE_CORS_ORIGINS", "https://dash.example.org,http://localhost:3000/")
	t.Setenv("STREAMTALLY_SERVE_HEARTBEAT", "5s")
	c := load(t, serveViews+fmt.Sprintf(`
serve:
  tokens:
    - {name: tenant-a, token: %s, views: [by_platform]}
    - {token: %s, views: ["*"]}
`, tokenA, strings.Repeat("b", 32)))
	s := c.Serve
	if s.HMACSecret != secret || s.Heartbeat != 5*time.Second {
		t.Errorf("environment not applied: heartbeat %s", s.Heartbeat)
	}
	if want := []string{"https://dash.example.org", "http://localhost:3000"}; !slices.Equal(s.CORSOrigins, want) {
		t.Errorf("cors_origins = %q, want %q", s.CORSOrigins, want)
	}
	if len(s.Tokens) != 2 || s.Tokens[0].Name != "tenant-a" || s.Tokens[1].Name != "token1" || !slices.Equal(s.Tokens[1].Views, []string{"*"}) {
		t.Errorf("tokens: %+v", s.Tokens)
	}
	r := fmt.Sprintf("%+v", c.Redacted())
	if strings.Contains(r, tokenA) || strings.Contains(r, secret) {
		t.Errorf("Redacted shows a secret: %s", r)
	}
	if c.Serve.Tokens[0].Token != tokenA {
		t.Error("Redacted changed the original's tokens")
	}
}

func TestBadServeConfigsNameTheKeyAndHideTheToken(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want []string
	}{
		{"bad addr", "serve: {addr: nope}\n", []string{"serve.addr"}},
		{"zero heartbeat", "serve: {heartbeat: 0s}\n", []string{"serve.heartbeat"}},
		{"zero buffer", "serve: {client_buffer: 0}\n", []string{"serve.client_buffer"}},
		{"negative history", "serve: {history: -1}\n", []string{"serve.history"}},
		{"short secret", "serve: {hmac_secret: short}\n", []string{"serve.hmac_secret", "32"}},
		{"public with tokens", "serve: {public: true, tokens: [{token: " + tokenA + ", views: ['*']}]}\n", []string{"serve.public"}},
		{"short token", "serve: {tokens: [{token: abc, views: [by_platform]}]}\n", []string{"serve.tokens[0].token"}},
		{"duplicate token", "serve: {tokens: [{token: " + tokenA + ", views: [by_platform]}, {token: " + tokenA + ", views: [by_country]}]}\n", []string{"serve.tokens[1].token", "serve.tokens[0]"}},
		{"unknown view", "serve: {tokens: [{token: " + tokenA + ", views: [nope]}]}\n", []string{"serve.tokens[0].views", "nope"}},
		{"no views", "serve: {tokens: [{token: " + tokenA + ", views: []}]}\n", []string{"serve.tokens[0].views"}},
		{"unknown token key", "serve: {tokens: [{token: " + tokenA + ", views: ['*'], colour: red}]}\n", []string{"colour"}},
		{"bad origin", "serve: {cors_origins: [dash.example.org]}\n", []string{"serve.cors_origins[0]"}},
		{"origin with path", "serve: {cors_origins: [\"https://a.example/x\"]}\n", []string{"serve.cors_origins[0]"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clearEnv(t)
			_, err := config.Load(writeYAML(t, serveViews+c.yaml))
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			checkConfigError(t, err, c.want)
			if strings.Contains(err.Error(), tokenA) {
				t.Errorf("error shows the token: %v", err)
			}
		})
	}
}
