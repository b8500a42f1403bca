package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/config"
)

// clearEnv hides any STREAMTALLY_* variable of the developer's shell from
// the test: viper ignores empty variables.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, k := range config.Keys() {
		t.Setenv(config.EnvName(k), "")
	}
}

func writeYAML(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "streamtally.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func load(t *testing.T, text string) *config.Config {
	t.Helper()
	c, err := config.Load(writeYAML(t, text))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

const minimalYAML = `
source:
  table: Donations
views:
  - name: by_platform
    group_by: [platform, meta.region]
    measures:
      n: count
      amount: sum(amount)
      fee: " sum( fee ) "
`

func TestLoadValidFileAppliesDefaults(t *testing.T) {
	clearEnv(t)
	c := load(t, minimalYAML)
	// Measures come from a map: load a few times so an unsorted result
	// cannot pass by luck.
	for range 10 {
		if again := load(t, minimalYAML); !reflect.DeepEqual(again.Views[0].Spec.Measures, c.Views[0].Spec.Measures) {
			t.Fatalf("measures differ between loads: %+v vs %+v", again.Views[0].Spec.Measures, c.Views[0].Spec.Measures)
		}
	}

	if c.Source.Table != "Donations" {
		t.Errorf("source.table = %q, want Donations", c.Source.Table)
	}
	checks := []struct {
		key       string
		got, want any
	}{
		{"source.start", c.Source.Start, config.StartTrimHorizon},
		{"source.poll_interval", c.Source.PollInterval, 250 * time.Millisecond},
		{"source.batch_size", c.Source.BatchSize, 1000},
		{"redis.prefix", c.Redis.Prefix, "tally"},
		{"redis.addr", c.Redis.Addr, "127.0.0.1:6379"},
		{"checkpoint.app", c.Checkpoint.App, "streamtally"},
		{"checkpoint.table", c.Checkpoint.Table, "streamtally"},
		{"checkpoint.lease_duration", c.Checkpoint.LeaseDuration, 10 * time.Second},
		{"log.level", c.Log.Level, "info"},
		{"dlq.max_len", c.DLQ.MaxLen, int64(10000)},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.key, ch.got, ch.want)
		}
	}
	if c.Checkpoint.WorkerID == "" {
		t.Error("checkpoint.worker_id is empty, want a generated id")
	}

	if len(c.Views) != 1 {
		t.Fatalf("got %d views, want 1", len(c.Views))
	}
	v := c.Views[0]
	if v.Name != "by_platform" || !slices.Equal(v.GroupBy, []string{"platform", "meta.region"}) {
		t.Errorf("view = %q group_by %q", v.Name, v.GroupBy)
	}
	want := []aggregate.MeasureSpec{
		{Name: "amount", Func: "sum", Attr: "amount"},
		{Name: "fee", Func: "sum", Attr: "fee"},
		{Name: "n", Func: "count"},
	}
	if !reflect.DeepEqual(v.Spec.Measures, want) {
		t.Errorf("parsed measures = %+v, want (sorted by name) %+v", v.Spec.Measures, want)
	}
}

func TestCheckpointTableDefaultsToApp(t *testing.T) {
	clearEnv(t)
	c := load(t, minimalYAML+"checkpoint: {app: donations-app}\n")
	if c.Checkpoint.Table != "donations-app" {
		t.Errorf("checkpoint.table = %q, want the app name donations-app", c.Checkpoint.Table)
	}
	c = load(t, minimalYAML+"checkpoint: {app: donations-app, table: leases}\n")
	if c.Checkpoint.Table != "leases" {
		t.Errorf("checkpoint.table = %q, want the explicit leases", c.Checkpoint.Table)
	}
}

func TestEnvironmentOverridesFile(t *testing.T) {
	clearEnv(t)
	p := writeYAML(t, minimalYAML+`
redis: {addr: "file-host:6379"}
checkpoint: {worker_id: file-worker}
`)
	// Sanity: without the environment the file wins over defaults.
	c, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Redis.Addr != "file-host:6379" || c.Checkpoint.WorkerID != "file-worker" {
		t.Fatalf("file values not loaded: addr %q worker %q", c.Redis.Addr, c.Checkpoint.WorkerID)
	}

	t.Setenv("STREAMTALLY_REDIS_ADDR", "env-host:6380")
	t.Setenv("STREAMTALLY_SOURCE_POLL_INTERVAL", "2s")
	t.Setenv("STREAMTALLY_CHECKPOINT_WORKER_ID", "env-worker")
	t.Setenv("STREAMTALLY_REDIS_PREFIX", "envprefix") // absent from the file
	t.Setenv("STREAMTALLY_DLQ_MAX_LEN", "0")          // the default is not 0
	c, err = config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Redis.Addr != "env-host:6380" {
		t.Errorf("redis.addr = %q, want env-host:6380", c.Redis.Addr)
	}
	if c.Source.PollInterval != 2*time.Second {
		t.Errorf("source.poll_interval = %s, want 2s", c.Source.PollInterval)
	}
	if c.Checkpoint.WorkerID != "env-worker" {
		t.Errorf("checkpoint.worker_id = %q, want env-worker", c.Checkpoint.WorkerID)
	}
	if c.Redis.Prefix != "envprefix" {
		t.Errorf("redis.prefix = %q, want envprefix", c.Redis.Prefix)
	}
	if c.DLQ.MaxLen != 0 {
		t.Errorf("dlq.max_len = %d, want 0", c.DLQ.MaxLen)
	}
}

func TestBadConfigsReturnOneLineErrorNamingTheKey(t *testing.T) {
	const views = `
views:
  - {name: v, group_by: [platform], measures: {n: count}}
`
	const src = "source: {table: T}\n"
	cases := []struct {
		name string
		yaml string
		path string // instead of writing yaml
		want []string
	}{
		{name: "unknown top-level key", yaml: src + views + "bogus: 1\n", want: []string{"bogus"}},
		{name: "unknown nested key", yaml: "source: {table: T, bogus: 1}\n" + views, want: []string{"source.bogus"}},
		{name: "unknown view key", yaml: src + "views: [{name: v, group_by: [p], measures: {n: count}, colour: red}]\n", want: []string{"views[0].colour"}},
		{name: "several decode errors", yaml: "source: {table: T, batch_size: many, tabel: U}\nredis: {db: x}\n" + views, want: []string{"source.batch_size", "source.tabel", "redis.db"}},
		{name: "wrong type", yaml: `source: {table: T, batch_size: "many"}` + views, want: []string{"source.batch_size"}},
		{name: "bad duration", yaml: "source: {table: T, poll_interval: 5parsecs}\n" + views, want: []string{"source.poll_interval"}},
		{name: "zero duration", yaml: "source: {table: T, poll_interval: 0s}\n" + views, want: []string{"source.poll_interval"}},
		{name: "short lease", yaml: src + "checkpoint: {lease_duration: 500ms}\n" + views, want: []string{"checkpoint.lease_duration"}},
		{name: "missing table and stream_arn", yaml: "source: {region: us-east-1}\n" + views, want: []string{"source.table", "source.stream_arn"}},
		{name: "bad start", yaml: "source: {table: T, start: middle}\n" + views, want: []string{"source.start", "middle"}},
		{name: "batch_size 0", yaml: "source: {table: T, batch_size: 0}\n" + views, want: []string{"source.batch_size"}},
		{name: "batch_size 1001", yaml: "source: {table: T, batch_size: 1001}\n" + views, want: []string{"source.batch_size", "1001"}},
		{name: "redis prefix with braces", yaml: src + "redis: {prefix: \"a{b}\"}\n" + views, want: []string{"redis.prefix"}},
		{name: "duplicate view name", yaml: src + views + "  - {name: v, group_by: [email], measures: {n: count}}\n", want: []string{"views[v]", "duplicate"}},
		{name: "empty group_by", yaml: src + "views: [{name: v, group_by: [], measures: {n: count}}]\n", want: []string{"views[v].group_by"}},
		{name: "no measures", yaml: src + "views: [{name: v, group_by: [p], measures: {}}]\n", want: []string{"views[v].measures"}},
		{name: "unknown measure function", yaml: src + "views: [{name: v, group_by: [p], measures: {avg_amount: avg(amount)}}]\n", want: []string{"views[v].measures.avg_amount", "avg(amount)"}},
		{name: "measure name starting with underscore", yaml: src + "views: [{name: v, group_by: [p], measures: {_meta: count}}]\n", want: []string{"views[v].measures._meta"}},
		{name: "view name with braces", yaml: src + "views: [{name: \"a{b}\", group_by: [p], measures: {n: count}}]\n", want: []string{"views[0].name", "a{b}"}},
		{name: "no views", yaml: src, want: []string{"views"}},
		{name: "bad log level", yaml: src + "log: {level: loud}\n" + views, want: []string{"log.level", "loud"}},
		{name: "negative dlq.max_len", yaml: src + "dlq: {max_len: -1}\n" + views, want: []string{"dlq.max_len"}},
		{name: "file not found", path: filepath.Join(os.TempDir(), "streamtally-no-such-dir", "missing.yaml"), want: []string{"missing.yaml"}},
		{name: "malformed YAML", yaml: "source: {table: T\nviews: [\n", want: []string{"yaml", "streamtally.yaml"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clearEnv(t)
			p := c.path
			if p == "" {
				p = writeYAML(t, c.yaml)
			}
			cfg, err := config.Load(p)
			if err == nil {
				t.Fatalf("Load succeeded (%+v), want an error", cfg)
			}
			checkConfigError(t, err, c.want)
		})
	}
}

// TestKeysListEveryScalarField walks the Config struct, so a field added
// without a default (and so without an environment override) fails here.
func TestKeysListEveryScalarField(t *testing.T) {
	var want []string
	ct := reflect.TypeFor[config.Config]()
	for i := 0; i < ct.NumField(); i++ {
		sec := ct.Field(i)
		if sec.Type.Kind() != reflect.Struct {
			continue // views: a list, not scalar keys
		}
		for j := 0; j < sec.Type.NumField(); j++ {
			f := sec.Type.Field(j)
			if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct {
				continue // serve.tokens: a list of entries, file only like views
			}
			want = append(want, sec.Tag.Get("mapstructure")+"."+f.Tag.Get("mapstructure"))
		}
	}
	slices.Sort(want)
	got := config.Keys()
	if !slices.IsSorted(got) {
		t.Errorf("Keys() is not sorted: %q", got)
	}
	if !slices.Equal(got, want) {
		t.Errorf("Keys() = %q\nwant      %q", got, want)
	}
}

func TestEnvName(t *testing.T) {
	cases := map[string]string{
		"source.poll_interval": "STREAMTALLY_SOURCE_POLL_INTERVAL",
		"redis.addr":           "STREAMTALLY_REDIS_ADDR",
		"checkpoint.worker_id": "STREAMTALLY_CHECKPOINT_WORKER_ID",
	}
	for key, want := range cases {
		if got := config.EnvName(key); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", key, got, want)
		}
	}
}

// TestMeasureNamesKeepTheirCase guards against viper's lowercasing of map
// keys: measure names become Redis key names and must stay as written.
func TestMeasureNamesKeepTheirCase(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	y := `
source: {table: T}
views:
  - name: v
    group_by: [p]
    measures: {totalAmount: sum(amount), Total: count, total: sum(fee)}
`
	if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range c.Views[0].Spec.Measures {
		names = append(names, m.Name)
	}
	if got, want := strings.Join(names, ","), "Total,total,totalAmount"; got != want {
		t.Fatalf("measures %s, want %s", got, want)
	}
}

// checkConfigError checks that err is a one-line *config.Error that
// mentions every string of want.
func checkConfigError(t *testing.T, err error, want []string) {
	t.Helper()
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %T %q is not a *config.Error", err, err)
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("message spans several lines: %q", msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("message %q does not mention %q", msg, w)
		}
	}
}
