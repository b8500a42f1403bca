package gateway_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/gateway"
)

const (
	tokenA   = "tenant-a-token-0123456789abcdef0123456789"
	tokenAll = "operator-token-0123456789abcdef0123456789"
	secret   = "hmac-secret-0123456789abcdef0123456789abcdef"
)

func authServe() config.Serve {
	s := defaultServe()
	s.Public = false
	s.Tokens = []config.Token{
		{Name: "tenant-a", Token: tokenA, Views: []string{"a"}},
		{Name: "operator", Token: tokenAll, Views: []string{"*"}},
	}
	s.HMACSecret = secret
	s.CORSOrigins = []string{"https://dash.example.org"}
	return s
}

func TestAuthAnswers401And403PerView(t *testing.T) {
	g := startGateway(t, authServe())
	signedB, err := gateway.Sign(secret, "tenant-b", []string{"b"}, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	expired, _ := gateway.Sign(secret, "tenant-b", []string{"b"}, time.Now().Add(-time.Second))
	otherKey, _ := gateway.Sign(strings.Repeat("z", 40), "tenant-b", []string{"b"}, time.Now().Add(time.Hour))
	// A changed character inside the signature, where every bit counts
	// (the last character of unpadded base64 carries unused bits), and
	// never the character that was there.
	i := len(signedB) - 5
	flip := byte('A')
	if signedB[i] == flip {
		flip = 'B'
	}
	tampered := signedB[:i] + string(flip) + signedB[i+1:]
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

	cases := []struct {
		name   string
		path   string
		header http.Header
		query  string
		want   int
	}{
		{"no token", "/v1/views/a", nil, "", 401},
		{"no token, list", "/v1/views", nil, "", 401},
		{"no token, events", "/v1/views/a/events", nil, "", 401},
		{"unknown token", "/v1/views/a", bearer("not-a-token-0123456789abcdef0123456789"), "", 401},
		{"basic auth is not a bearer token", "/v1/views/a", http.Header{"Authorization": {"Basic " + tokenA}}, "", 401},
		{"own view", "/v1/views/a", bearer(tokenA), "", 200},
		{"own view's events, token in the query", "/v1/views/a/events", nil, "access_token=" + tokenA, 200},
		{"another tenant's view", "/v1/views/b", bearer(tokenA), "", 403},
		{"another tenant's events", "/v1/views/b/events", nil, "access_token=" + tokenA, 403},
		{"a view that does not exist, to a tenant", "/v1/views/nope", bearer(tokenA), "", 403},
		{"a view that does not exist, to the operator", "/v1/views/nope", bearer(tokenAll), "", 404},
		{"operator reads every view", "/v1/views/b", bearer(tokenAll), "", 200},
		{"signed token, its view", "/v1/views/b", bearer(signedB), "", 200},
		{"signed token, another view", "/v1/views/a", bearer(signedB), "", 403},
		{"expired signed token", "/v1/views/b", bearer(expired), "", 401},
		{"token signed with another secret", "/v1/views/b", bearer(otherKey), "", 401},
		{"tampered signed token", "/v1/views/b", bearer(tampered), "", 401},
		{"the page needs no token", "/", nil, "", 200},
		{"several views, all granted", "/v1/events", nil, "view=a&access_token=" + tokenA, 200},
		{"several views, one not granted", "/v1/events", nil, "view=a&view=b&access_token=" + tokenA, 403},
		{"several views, no token", "/v1/events", nil, "view=a", 401},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url := g.url + c.path
			if c.query != "" {
				url += "?" + c.query
			}
			req, _ := http.NewRequest("GET", url, nil)
			for k, v := range c.header {
				req.Header[k] = v
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Errorf("GET %s: %d, want %d", c.path, resp.StatusCode, c.want)
			}
		})
	}
	for _, tok := range []string{tokenA, tokenAll, signedB, expired, tampered, secret} {
		if strings.Contains(g.log.String(), tok) {
			t.Errorf("the log shows a token or the secret")
		}
	}
	if !strings.Contains(g.log.String(), `"who":"tenant-a"`) {
		t.Errorf("the log does not name the tenant refused")
	}
}

func TestViewListShowsOnlyTheTokensViews(t *testing.T) {
	g := startGateway(t, authServe())
	for _, c := range []struct{ tok, want string }{
		{tokenA, `"name":"a"`},
		{tokenAll, `"name":"a"`},
	} {
		req, _ := http.NewRequest("GET", g.url+"/v1/views", nil)
		req.Header.Set("Authorization", "Bearer "+c.tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		resp.Body.Close()
		if !strings.Contains(body.String(), c.want) {
			t.Errorf("list %s lacks %s", body.String(), c.want)
		}
		hasB := strings.Contains(body.String(), `"name":"b"`)
		if hasB != (c.tok == tokenAll) {
			t.Errorf("list for %s: %s", map[bool]string{true: "operator", false: "tenant-a"}[c.tok == tokenAll], body.String())
		}
	}
}

func TestCORSAllowsOnlyListedOrigins(t *testing.T) {
	g := startGateway(t, authServe())
	cases := []struct {
		origin, method string
		wantAllow      string
		wantStatus     int
	}{
		{"https://dash.example.org", "GET", "https://dash.example.org", 401},
		{"https://evil.example", "GET", "", 401},
		{"https://dash.example.org", "OPTIONS", "https://dash.example.org", 204},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, g.url+"/v1/views/a", nil)
		req.Header.Set("Origin", c.origin)
		if c.method == "OPTIONS" {
			req.Header.Set("Access-Control-Request-Method", "GET")
			req.Header.Set("Access-Control-Request-Headers", "authorization")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != c.wantAllow || resp.StatusCode != c.wantStatus {
			t.Errorf("%s from %s: %d, Allow-Origin %q; want %d, %q", c.method, c.origin, resp.StatusCode, got, c.wantStatus, c.wantAllow)
		}
		if c.method == "OPTIONS" && !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Errorf("preflight does not allow the Authorization header")
		}
	}
}
