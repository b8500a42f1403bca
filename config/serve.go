package config

import (
	"fmt"
	"net"
	"net/url"
	"time"
)

// Serve configures `streamtally serve`, the gateway that streams views to
// browsers over Server-Sent Events.
type Serve struct {
	Addr string `mapstructure:"addr"`
	// Public serves every view without a token. Without it, the gateway
	// refuses to start unless Tokens or HMACSecret is set, so that a
	// forgotten token list never publishes a tenant's numbers.
	Public bool `mapstructure:"public"`
	// Tokens are static bearer tokens, each mapped to the views it may read.
	Tokens []Token `mapstructure:"tokens"`
	// HMACSecret signs expiring tokens (`streamtally token`); set it from
	// the environment, STREAMTALLY_SERVE_HMAC_SECRET.
	HMACSecret   string        `mapstructure:"hmac_secret"`
	CORSOrigins  []string      `mapstructure:"cors_origins"`
	Heartbeat    time.Duration `mapstructure:"heartbeat"`
	ClientBuffer int           `mapstructure:"client_buffer"` // events queued per client before it is dropped
	History      int           `mapstructure:"history"`       // deltas kept per view for clients that resume
}

// Token grants one bearer token read access to views ("*": all of them).
type Token struct {
	Name  string   `mapstructure:"name"` // shown in logs instead of the token
	Token string   `mapstructure:"token"`
	Views []string `mapstructure:"views"`
}

// AllViews in a token's views grants every view.
const AllViews = "*"

// minSecret is the shortest token or HMAC secret accepted: 128 bits of
// hex, about; shorter ones can be guessed online.
const minSecret = 32

// HasAuth reports whether any token can be accepted.
func (s *Serve) HasAuth() bool { return len(s.Tokens) > 0 || s.HMACSecret != "" }

// validate checks the serve section against the configured views. No
// error message shows a token or the secret.
func (s *Serve) validate(views map[string]bool) error {
	if _, port, err := net.SplitHostPort(s.Addr); err != nil || port == "" {
		return errorf("serve.addr: %q is not host:port (e.g. :8080)", s.Addr)
	}
	switch {
	case s.Heartbeat <= 0:
		return errorf("serve.heartbeat: must be positive, got %s", s.Heartbeat)
	case s.ClientBuffer < 1:
		return errorf("serve.client_buffer: %d is below 1", s.ClientBuffer)
	case s.History < 0:
		return errorf("serve.history: %d is negative", s.History)
	case s.HMACSecret != "" && len(s.HMACSecret) < minSecret:
		return errorf("serve.hmac_secret: shorter than %d characters", minSecret)
	case s.Public && s.HasAuth():
		return errorf("serve.public: true, but tokens or an HMAC secret are set; choose one")
	}
	seenTok := map[string]int{}
	for i := range s.Tokens {
		t := &s.Tokens[i]
		at := fmt.Sprintf("serve.tokens[%d]", i)
		if t.Name == "" {
			t.Name = fmt.Sprintf("token%d", i)
		} else if !nameRE.MatchString(t.Name) {
			return errorf("%s.name: %q must be letters, digits, '_', '.', '-'", at, t.Name)
		}
		if len(t.Token) < minSecret {
			return errorf("%s.token: shorter than %d characters", at, minSecret)
		}
		if j, dup := seenTok[t.Token]; dup {
			return errorf("%s.token: the same as serve.tokens[%d].token", at, j)
		}
		seenTok[t.Token] = i
		if len(t.Views) == 0 {
			return errorf("%s.views: at least one view (or \"*\") is required", at)
		}
		for _, v := range t.Views {
			if v != AllViews && !views[v] {
				return errorf("%s.views: %q is not a view of the configuration", at, v)
			}
		}
	}
	for i, o := range s.CORSOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return errorf("serve.cors_origins[%d]: %q is not an origin like https://dash.example.org", i, o)
		}
		s.CORSOrigins[i] = u.Scheme + "://" + u.Host
	}
	return nil
}

// RequireAccess is checked by `streamtally serve` only: the other commands
// share the file and need no serve section.
func (s *Serve) RequireAccess() error {
	if !s.Public && !s.HasAuth() {
		return errorf("serve: no serve.tokens and no serve.hmac_secret; set one, or serve.public: true to serve every view without a token")
	}
	return nil
}
