// Package config loads and validates streamtally's configuration once, into
// typed structs. Nothing else in the program reads files or environment for
// settings.
package config

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"github.com/streamtally/streamtally/aggregate"
	"go.yaml.in/yaml/v3"
)

// Config is the whole validated configuration.
type Config struct {
	Source     Source     `mapstructure:"source"`
	Checkpoint Checkpoint `mapstructure:"checkpoint"`
	Redis      Redis      `mapstructure:"redis"`
	Log        Log        `mapstructure:"log"`
	Metrics    Metrics    `mapstructure:"metrics"`
	DLQ        DLQ        `mapstructure:"dlq"`
	Serve      Serve      `mapstructure:"serve"`
	Views      []View     `mapstructure:"views"`
}

// Source says which stream to read and how.
type Source struct {
	Table        string        `mapstructure:"table"`
	StreamARN    string        `mapstructure:"stream_arn"`
	Endpoint     string        `mapstructure:"endpoint"`
	Region       string        `mapstructure:"region"`
	Start        string        `mapstructure:"start"`
	PollInterval time.Duration `mapstructure:"poll_interval"`
	BatchSize    int           `mapstructure:"batch_size"`
}

// Start positions for shards that have no checkpoint yet.
const (
	StartTrimHorizon = "trim_horizon"
	StartLatest      = "latest"
)

// Checkpoint configures the KCL lease table.
type Checkpoint struct {
	App           string        `mapstructure:"app"`
	Table         string        `mapstructure:"table"`
	Endpoint      string        `mapstructure:"endpoint"`
	WorkerID      string        `mapstructure:"worker_id"`
	LeaseDuration time.Duration `mapstructure:"lease_duration"`
	SyncInterval  time.Duration `mapstructure:"sync_interval"`
	ShutdownGrace time.Duration `mapstructure:"shutdown_grace"`
}

// Redis says where counters live. After Load, Addrs holds every address
// (one for a single server), Addr the first of them, Cluster whether they
// are cluster seeds, and a redis:// or rediss:// URL in redis.addr has been
// taken apart into the other fields.
type Redis struct {
	Addr       string   `mapstructure:"addr"`
	Addrs      []string `mapstructure:"addrs"`
	Cluster    bool     `mapstructure:"cluster"`
	Username   string   `mapstructure:"username"`
	Password   string   `mapstructure:"password"`
	DB         int      `mapstructure:"db"`
	Prefix     string   `mapstructure:"prefix"`
	TLS        bool     `mapstructure:"tls"`
	CAFile     string   `mapstructure:"ca_file"`     // empty: the system's roots
	ServerName string   `mapstructure:"server_name"` // empty: each address's host
	CertFile   string   `mapstructure:"cert_file"`   // client certificate, for mutual TLS
	KeyFile    string   `mapstructure:"key_file"`
}

// defaultRedisAddr is used when neither redis.addr nor redis.addrs is set.
// It is not the registered default of redis.addr, so that setting
// redis.addrs alone is not mistaken for setting both.
const defaultRedisAddr = "127.0.0.1:6379"

// Metrics configures the HTTP endpoint for /metrics, /healthz and /readyz.
type Metrics struct {
	Addr string `mapstructure:"addr"` // empty: no endpoint
}

// DLQ configures the dead-letter stream, <redis.prefix>:dlq, that keeps
// the records views reject as bad data.
type DLQ struct {
	MaxLen int64 `mapstructure:"max_len"` // entries kept, about; 0: none are written
}

// Log configures the process log.
type Log struct {
	Level string `mapstructure:"level"`
}

// View is one declared aggregation.
type View struct {
	Name     string            `mapstructure:"name"`
	GroupBy  []string          `mapstructure:"group_by"`
	Measures map[string]string `mapstructure:"measures"`
	Bucket   *Bucket           `mapstructure:"bucket"` // nil: totals, no time buckets
	// Where is the filter as viper read it; Load parses it from the file's
	// YAML nodes instead, because viper lowercases keys (attribute names)
	// and turns numbers into floats.
	Where any `mapstructure:"where"`

	// Spec is the view as the fold compiles it, parsed and validated by
	// Load from the fields above.
	Spec aggregate.Spec `mapstructure:"-"`
}

// Bucket makes a view a time series: one set of counters per bucket.
type Bucket struct {
	Size      string `mapstructure:"size"`      // e.g. 1m, 1h, 1d
	Time      string `mapstructure:"time"`      // attribute path, or "stream"
	Retention string `mapstructure:"retention"` // e.g. 30d
}

// Error is a configuration problem; the CLI exits 2 on it.
type Error struct{ msg string }

func (e *Error) Error() string { return "config: " + e.msg }

func errorf(format string, args ...any) error { return &Error{fmt.Sprintf(format, args...)} }

// defaults lists every scalar key. Registering them is also what lets
// STREAMTALLY_<SECTION>_<KEY> override keys absent from the file.
var defaults = map[string]any{
	"source.table":              "",
	"source.stream_arn":         "",
	"source.endpoint":           "",
	"source.region":             "",
	"source.start":              StartTrimHorizon,
	"source.poll_interval":      "250ms",
	"source.batch_size":         1000,
	"checkpoint.app":            "streamtally",
	"checkpoint.table":          "",
	"checkpoint.endpoint":       "",
	"checkpoint.worker_id":      "",
	"checkpoint.lease_duration": "10s",
	"checkpoint.sync_interval":  "5s",
	"checkpoint.shutdown_grace": "20s",
	"redis.addr":                "",
	"redis.addrs":               "",
	"redis.cluster":             false,
	"redis.username":            "",
	"redis.password":            "",
	"redis.db":                  0,
	"redis.prefix":              "tally",
	"redis.tls":                 false,
	"redis.ca_file":             "",
	"redis.server_name":         "",
	"redis.cert_file":           "",
	"redis.key_file":            "",
	"log.level":                 "info",
	"metrics.addr":              ":9090",
	"dlq.max_len":               10000,
	"serve.addr":                ":8080",
	"serve.public":              false,
	"serve.hmac_secret":         "",
	"serve.cors_origins":        "",
	"serve.heartbeat":           "15s",
	"serve.client_buffer":       256,
	"serve.history":             1024,
}

// Keys returns every scalar configuration key, sorted; for documentation
// and tests.
func Keys() []string {
	keys := make([]string, 0, len(defaults))
	for k := range defaults {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Default returns the default of a scalar key as text.
func Default(key string) string { return fmt.Sprint(defaults[key]) }

// EnvName is the environment variable that overrides key.
func EnvName(key string) string {
	return "STREAMTALLY_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// Load reads the YAML file at path (may be empty: environment and defaults
// only), applies environment overrides and validates the result.
func Load(path string) (*Config, error) {
	v := viper.New()
	for k, d := range defaults {
		v.SetDefault(k, d)
	}
	v.SetEnvPrefix("STREAMTALLY")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	var raw []byte
	if path != "" {
		var err error
		if raw, err = os.ReadFile(path); err != nil {
			return nil, errorf("%v", err)
		}
		v.SetConfigType("yaml")
		if err := v.ReadConfig(bytes.NewReader(raw)); err != nil {
			return nil, errorf("%s: %s", path, oneLine(err))
		}
	}
	var c Config
	err := v.Unmarshal(&c, func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = true
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		)
	})
	if err != nil {
		return nil, errorf("%s", describeDecodeError(err))
	}
	if err := keepMeasureCase(raw, c.Views); err != nil {
		return nil, errorf("%s: %s", path, oneLine(err))
	}
	if err := parseWhere(raw, c.Views); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

var (
	nameRE    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)
	measureRE = regexp.MustCompile(`^([a-z_]+)\(\s*([^()\s]+)\s*\)$`)
	pathRE    = regexp.MustCompile(`^[^.\s]+(\.[^.\s]+)*$`)
	logLevels = map[string]bool{"debug": true, "info": true, "warn": true, "error": true}

	invalidKeysRE = regexp.MustCompile(`^'([^']*)' has invalid keys: (.+)$`)
)

// keepMeasureCase restores measure names as written: viper lowercases map
// keys, which would rename totalAmount to totalamount in Redis and merge
// measures that differ only in case.
func keepMeasureCase(raw []byte, views []View) error {
	if len(raw) == 0 {
		return nil
	}
	var doc struct {
		Views []struct {
			Measures map[string]string `yaml:"measures"`
		} `yaml:"views"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return err
	}
	if len(doc.Views) != len(views) {
		return nil // views came from elsewhere than the file
	}
	for i := range views {
		views[i].Measures = doc.Views[i].Measures
	}
	return nil
}

func (c *Config) validate() error {
	s := &c.Source
	s.Start = strings.ToLower(s.Start)
	switch {
	case s.Table == "" && s.StreamARN == "":
		return errorf("source.table or source.stream_arn: one is required")
	case s.Start != StartTrimHorizon && s.Start != StartLatest:
		return errorf("source.start: %q is not trim_horizon or latest", s.Start)
	case s.PollInterval <= 0:
		return errorf("source.poll_interval: must be positive, got %s", s.PollInterval)
	case s.BatchSize < 1 || s.BatchSize > 1000:
		return errorf("source.batch_size: %d is outside 1..1000 (the GetRecords limit)", s.BatchSize)
	}
	cp := &c.Checkpoint
	if !nameRE.MatchString(cp.App) {
		return errorf("checkpoint.app: %q must be letters, digits, '_', '.', '-'", cp.App)
	}
	if cp.Table == "" {
		cp.Table = cp.App
	}
	if cp.Endpoint == "" {
		cp.Endpoint = s.Endpoint
	}
	if cp.WorkerID == "" {
		cp.WorkerID = defaultWorkerID()
	}
	switch {
	case cp.LeaseDuration < time.Second:
		return errorf("checkpoint.lease_duration: %s is below 1s", cp.LeaseDuration)
	case cp.SyncInterval <= 0:
		return errorf("checkpoint.sync_interval: must be positive, got %s", cp.SyncInterval)
	case cp.ShutdownGrace <= 0:
		return errorf("checkpoint.shutdown_grace: must be positive, got %s", cp.ShutdownGrace)
	}
	if err := c.Redis.validate(); err != nil {
		return err
	}
	if !logLevels[strings.ToLower(c.Log.Level)] {
		return errorf("log.level: %q is not debug, info, warn or error", c.Log.Level)
	}
	c.Log.Level = strings.ToLower(c.Log.Level)
	if c.DLQ.MaxLen < 0 {
		return errorf("dlq.max_len: %d is negative (0 turns dead letters off)", c.DLQ.MaxLen)
	}
	if a := c.Metrics.Addr; a != "" {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			return errorf("metrics.addr: %q is not host:port (e.g. :9090)", a)
		}
	}
	if len(c.Views) == 0 {
		return errorf("views: at least one view is required")
	}
	seen := map[string]bool{}
	for i := range c.Views {
		if err := c.Views[i].validate(fmt.Sprintf("views[%d]", i), seen); err != nil {
			return err
		}
	}
	return c.Serve.validate(seen)
}

func (v *View) validate(at string, seen map[string]bool) error {
	if !nameRE.MatchString(v.Name) {
		return errorf("%s.name: %q must be letters, digits, '_', '.', '-'", at, v.Name)
	}
	at = fmt.Sprintf("views[%s]", v.Name)
	if seen[v.Name] {
		return errorf("%s: duplicate view name", at)
	}
	seen[v.Name] = true
	if len(v.GroupBy) == 0 {
		return errorf("%s.group_by: at least one attribute is required", at)
	}
	for _, p := range v.GroupBy {
		if !pathRE.MatchString(p) {
			return errorf("%s.group_by: %q is not an attribute path", at, p)
		}
	}
	if len(v.Measures) == 0 {
		return errorf("%s.measures: at least one measure is required", at)
	}
	spec := aggregate.Spec{Name: v.Name, GroupBy: v.GroupBy, Filter: v.Spec.Filter}
	for name, fn := range v.Measures {
		if !nameRE.MatchString(name) || strings.HasPrefix(name, "_") {
			return errorf("%s.measures.%s: names must be letters, digits, '_', '.', '-' and not start with '_'", at, name)
		}
		fn = strings.TrimSpace(fn)
		m, ok := parseMeasure(name, fn)
		if !ok {
			fns := aggregate.Functions()
			return errorf("%s.measures.%s: unknown function %q (want %s or %s)", at, name, fn, strings.Join(fns[:len(fns)-1], ", "), fns[len(fns)-1])
		}
		spec.Measures = append(spec.Measures, m)
	}
	sort.Slice(spec.Measures, func(i, j int) bool { return spec.Measures[i].Name < spec.Measures[j].Name })
	if v.Bucket != nil {
		b, err := v.Bucket.parse(at + ".bucket")
		if err != nil {
			return err
		}
		spec.Bucket = b
	}
	v.Spec = spec
	return nil
}

// Specs returns the views as the fold compiles them.
func (c *Config) Specs() []aggregate.Spec {
	out := make([]aggregate.Spec, len(c.Views))
	for i := range c.Views {
		out[i] = c.Views[i].Spec
	}
	return out
}

func defaultWorkerID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "worker"
	}
	return fmt.Sprintf("%s-%d-%d", host, os.Getpid(), time.Now().UnixNano()%1_000_000)
}

// describeDecodeError turns mapstructure's multi-line report into one line
// that names the keys.
func describeDecodeError(err error) string {
	var msgs []string
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "*"))
		if line == "" || strings.HasPrefix(line, "decoding failed") || strings.HasSuffix(line, "error(s) decoding:") {
			continue
		}
		// "'source' has invalid keys: a, b" names the section, not the keys.
		if m := invalidKeysRE.FindStringSubmatch(line); m != nil {
			keys := strings.Split(m[2], ", ")
			for i, k := range keys {
				if m[1] != "" {
					keys[i] = m[1] + "." + k
				}
			}
			line = "unknown key " + strings.Join(keys, ", ")
		}
		msgs = append(msgs, line)
	}
	if len(msgs) == 0 {
		return oneLine(err)
	}
	sort.Strings(msgs)
	return strings.Join(msgs, "; ")
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// Redacted returns a copy safe to print: secrets replaced.
func (c Config) Redacted() Config {
	if c.Redis.Password != "" {
		c.Redis.Password = "REDACTED"
	}
	if c.Serve.HMACSecret != "" {
		c.Serve.HMACSecret = "REDACTED"
	}
	if len(c.Serve.Tokens) > 0 {
		tokens := make([]Token, len(c.Serve.Tokens))
		for i, t := range c.Serve.Tokens {
			t.Token = "REDACTED"
			tokens[i] = t
		}
		c.Serve.Tokens = tokens
	}
	return c
}

// parseMeasure reads "count" or "fn(attr)" for a function aggregate knows.
func parseMeasure(name, text string) (aggregate.MeasureSpec, bool) {
	fn, attr := text, ""
	if m := measureRE.FindStringSubmatch(text); m != nil {
		if !pathRE.MatchString(m[2]) {
			return aggregate.MeasureSpec{}, false
		}
		fn, attr = m[1], m[2]
	}
	known, takesAttr := aggregate.Function(fn)
	if !known || takesAttr != (attr != "") {
		return aggregate.MeasureSpec{}, false
	}
	return aggregate.MeasureSpec{Name: name, Func: fn, Attr: attr}, true
}
