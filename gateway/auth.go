package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/streamtally/streamtally/config"
)

// Grant is what a request's token allows: the views it may read. Who names
// the token's holder for logs; the token itself is never kept.
type Grant struct {
	Who   string
	all   bool
	views map[string]bool
}

// May reports whether the grant allows reading view.
func (g *Grant) May(view string) bool { return g.all || g.views[view] }

func newGrant(who string, views []string) *Grant {
	g := &Grant{Who: who, views: map[string]bool{}}
	for _, v := range views {
		if v == config.AllViews {
			g.all = true
		}
		g.views[v] = true
	}
	return g
}

// Auth checks bearer tokens: static ones from the configuration, and
// tokens signed with the HMAC secret that carry their views and expiry.
type Auth struct {
	public bool
	static map[[32]byte]*Grant // by SHA-256 of the token, so lookups do not compare secrets byte by byte
	secret []byte
	now    func() time.Time
}

// NewAuth builds the checker for the serve section.
func NewAuth(s config.Serve) *Auth {
	a := &Auth{public: s.Public, static: map[[32]byte]*Grant{}, now: time.Now}
	for _, t := range s.Tokens {
		a.static[sha256.Sum256([]byte(t.Token))] = newGrant(t.Name, t.Views)
	}
	if s.HMACSecret != "" {
		a.secret = []byte(s.HMACSecret)
	}
	return a
}

// errNoToken and errBadToken are answered with 401; their text is safe to
// show and log, as it never includes the token.
var (
	errNoToken  = errors.New("a bearer token is required")
	errBadToken = errors.New("the token is not valid")
	errExpired  = errors.New("the token has expired")
)

// Check returns the grant of r's token, from the Authorization header or,
// because a browser's EventSource cannot set headers, from the
// access_token query parameter.
func (a *Auth) Check(r *http.Request) (*Grant, error) {
	if a.public {
		return &Grant{Who: "public", all: true}, nil
	}
	tok := ""
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return nil, errBadToken
		}
		tok = strings.TrimSpace(rest)
	} else {
		tok = r.URL.Query().Get("access_token")
	}
	if tok == "" {
		return nil, errNoToken
	}
	if g, ok := a.static[sha256.Sum256([]byte(tok))]; ok {
		return g, nil
	}
	if a.secret != nil && strings.HasPrefix(tok, tokenPrefix) {
		return a.verify(tok)
	}
	return nil, errBadToken
}

// Signed tokens: st1.<payload>.<mac>, both base64url without padding,
// the MAC an HMAC-SHA256 of "st1.<payload>" under serve.hmac_secret.
const tokenPrefix = "st1."

type claims struct {
	Sub   string   `json:"sub"`
	Views []string `json:"views"`
	Exp   int64    `json:"exp"` // Unix seconds
}

// Sign returns a token for who that reads views until exp.
func Sign(secret string, who string, views []string, exp time.Time) (string, error) {
	if secret == "" {
		return "", errors.New("serve.hmac_secret is not set")
	}
	if len(views) == 0 {
		return "", errors.New("a token needs at least one view")
	}
	body, err := json.Marshal(claims{Sub: who, Views: views, Exp: exp.Unix()})
	if err != nil {
		return "", err
	}
	signed := tokenPrefix + base64.RawURLEncoding.EncodeToString(body)
	return signed + "." + base64.RawURLEncoding.EncodeToString(mac([]byte(secret), signed)), nil
}

func mac(secret []byte, signed string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(signed))
	return m.Sum(nil)
}

func (a *Auth) verify(tok string) (*Grant, error) {
	i := strings.LastIndexByte(tok, '.')
	if i <= len(tokenPrefix) {
		return nil, errBadToken
	}
	signed, sig := tok[:i], tok[i+1:]
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || subtle.ConstantTimeCompare(got, mac(a.secret, signed)) != 1 {
		return nil, errBadToken
	}
	body, err := base64.RawURLEncoding.DecodeString(signed[len(tokenPrefix):])
	if err != nil {
		return nil, errBadToken
	}
	var c claims
	if err := json.Unmarshal(body, &c); err != nil || len(c.Views) == 0 {
		return nil, errBadToken
	}
	if !a.now().Before(time.Unix(c.Exp, 0)) {
		return nil, errExpired
	}
	who := c.Sub
	if who == "" {
		who = "signed"
	}
	return newGrant(fmt.Sprintf("%s (signed)", who), c.Views), nil
}
