// Package deploy holds tests of the repository's deployment files.
package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/streamtally/streamtally/config"
)

// root is the repository root, where docker-compose.yml and the
// Dockerfile live (tests run in deploy/).
const root = ".."

// metricsPort is where the daemon serves /metrics, /healthz and /readyz by
// default (metrics.addr ":9090"), and what the compose file must publish.
const metricsPort = 9090

// composePath is the file under test; relative paths in it are resolved
// against root, as docker compose does for a file in the repository root.
var composePath = filepath.Join(root, "docker-compose.yml")

// allowedImages are the public images the compose file may pull; our own
// services are built from the repository.
var allowedImages = []string{"redis", "amazon/dynamodb-local"}

type composeFile struct {
	Name     string             `yaml:"name"`
	Services map[string]service `yaml:"services"`
	Volumes  map[string]any     `yaml:"volumes"`
	Networks map[string]any     `yaml:"networks"`
}

type service struct {
	Image           string    `yaml:"image"`
	Build           yaml.Node `yaml:"build"`
	Entrypoint      yaml.Node `yaml:"entrypoint"`
	Command         yaml.Node `yaml:"command"`
	Environment     yaml.Node `yaml:"environment"`
	Volumes         []any     `yaml:"volumes"`
	Ports           []any     `yaml:"ports"`
	Expose          []any     `yaml:"expose"`
	DependsOn       yaml.Node `yaml:"depends_on"`
	Restart         string    `yaml:"restart"`
	Healthcheck     any       `yaml:"healthcheck"`
	User            string    `yaml:"user"`
	ReadOnly        bool      `yaml:"read_only"`
	StopGracePeriod string    `yaml:"stop_grace_period"`
	StopSignal      string    `yaml:"stop_signal"`
	Init            bool      `yaml:"init"`
	Networks        any       `yaml:"networks"`
	Labels          any       `yaml:"labels"`
	Profiles        []string  `yaml:"profiles"`
	Tmpfs           any       `yaml:"tmpfs"`
	ContainerName   string    `yaml:"container_name"`
	WorkingDir      string    `yaml:"working_dir"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true) // a misspelt key would be ignored by compose
	var c composeFile
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	if len(c.Services) == 0 {
		t.Fatal("docker-compose.yml has no services")
	}
	return c
}

// dockerfile is what the compose file relies on from a Dockerfile's final
// stage.
type dockerfile struct {
	entrypoint, cmd []string
	binaries        map[string]bool // names copied into /usr/local/bin/
	expose          []int
}

func parseDockerfile(t *testing.T, file string) dockerfile {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasSuffix(l, `\`) {
			cur.WriteString(strings.TrimSuffix(l, `\`) + " ")
			continue
		}
		cur.WriteString(l)
		if s := strings.TrimSpace(cur.String()); s != "" {
			lines = append(lines, s)
		}
		cur.Reset()
	}
	d := dockerfile{binaries: map[string]bool{}}
	for _, l := range lines {
		instr, args, _ := strings.Cut(l, " ")
		args = strings.TrimSpace(args)
		switch strings.ToUpper(instr) {
		case "FROM": // only the final stage is the image
			d = dockerfile{binaries: map[string]bool{}}
		case "ENTRYPOINT", "CMD":
			var argv []string
			if err := json.Unmarshal([]byte(args), &argv); err != nil {
				t.Fatalf("%s: %s is not in exec form: %s", file, instr, l)
			}
			if strings.ToUpper(instr) == "ENTRYPOINT" {
				d.entrypoint = argv
			} else {
				d.cmd = argv
			}
		case "COPY", "ADD":
			var words []string
			for _, w := range strings.Fields(args) {
				if !strings.HasPrefix(w, "--") {
					words = append(words, w)
				}
			}
			if len(words) < 2 {
				continue
			}
			dest := words[len(words)-1]
			for _, src := range words[:len(words)-1] {
				switch {
				case strings.HasSuffix(dest, "/") && path.Dir(dest+"x") == "/usr/local/bin":
					d.binaries[path.Base(src)] = true
				case path.Dir(dest) == "/usr/local/bin":
					d.binaries[path.Base(dest)] = true
				}
			}
		case "EXPOSE":
			for _, p := range strings.Fields(args) {
				n, err := strconv.Atoi(strings.TrimSuffix(p, "/tcp"))
				if err != nil {
					t.Fatalf("%s: EXPOSE %s", file, p)
				}
				d.expose = append(d.expose, n)
			}
		}
	}
	return d
}

// cli is what a binary of ours accepts: subcommand -> flag names.
type cli map[string]map[string]bool

var (
	usageCommand = regexp.MustCompile(`^  ([a-z][a-z-]*)\b(.*)$`) // "  run       --config FILE ..."
	usageAlts    = regexp.MustCompile(`usage: \S+ ([a-z|]+)`)     // "usage: loadgen create|write|check [flags]"
	longFlag     = regexp.MustCompile(`--?([a-z][a-z0-9-]*)`)
	helpFlag     = regexp.MustCompile(`(?m)^\s+-([a-z][a-z0-9-]*)`) // flag package's -h output
)

// buildCLIs builds cmd/<name> for each name and asks each binary for its
// usage: the subcommands it lists, and each subcommand's flags from its
// usage line and its -h output.
func buildCLIs(t *testing.T, names []string) map[string]cli {
	t.Helper()
	dir := t.TempDir()
	out := map[string]cli{}
	for _, name := range names {
		bin := filepath.Join(dir, name)
		build := exec.Command("go", "build", "-o", bin, "./cmd/"+name)
		build.Dir = root
		if b, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build cmd/%s: %v\n%s", name, err, b)
		}
		usage, _ := exec.Command(bin).CombinedOutput() // no arguments: usage, exit 2
		if help, err := exec.Command(bin, "help").Output(); err == nil {
			usage = append(usage, help...)
		}
		c := cli{}
		for _, l := range strings.Split(string(usage), "\n") {
			if m := usageCommand.FindStringSubmatch(l); m != nil {
				c[m[1]] = map[string]bool{}
				for _, f := range longFlag.FindAllStringSubmatch(m[2], -1) {
					c[m[1]][f[1]] = true
				}
			}
			if m := usageAlts.FindStringSubmatch(l); m != nil {
				for _, s := range strings.Split(m[1], "|") {
					if c[s] == nil {
						c[s] = map[string]bool{}
					}
				}
			}
		}
		if len(c) == 0 {
			t.Fatalf("%s lists no subcommands in its usage:\n%s", name, usage)
		}
		for sub := range c {
			h, _ := exec.Command(bin, sub, "-h").CombinedOutput()
			for _, f := range helpFlag.FindAllStringSubmatch(string(h), -1) {
				c[sub][f[1]] = true
			}
		}
		out[name] = c
	}
	return out
}

func strOrList(t *testing.T, what string, n yaml.Node) []string {
	t.Helper()
	switch n.Kind {
	case 0:
		return nil
	case yaml.ScalarNode:
		return strings.Fields(n.Value)
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return l
}

func environment(t *testing.T, what string, n yaml.Node) map[string]string {
	t.Helper()
	env := map[string]string{}
	switch n.Kind {
	case 0:
	case yaml.MappingNode:
		if err := n.Decode(&env); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for _, kv := range l {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
	default:
		t.Fatalf("%s: want a map or a list", what)
	}
	return env
}

// published returns the container ports a service publishes, checking
// that every part of every mapping is a port number.
func published(t *testing.T, name string, s service) []int {
	t.Helper()
	var out []int
	for _, p := range s.Ports {
		var spec string
		switch p := p.(type) {
		case string:
			spec = p
		case int:
			spec = strconv.Itoa(p)
		case map[string]any: // long syntax
			spec = fmt.Sprintf("%v:%v", p["published"], p["target"])
		default:
			t.Errorf("service %s: port %v", name, p)
			continue
		}
		spec, _, _ = strings.Cut(spec, "/") // "/tcp"
		parts := strings.Split(spec, ":")
		if len(parts) == 3 { // ip:host:container
			if net.ParseIP(parts[0]) == nil {
				t.Errorf("service %s: port %q: %q is not an IP address", name, p, parts[0])
			}
			parts = parts[1:]
		}
		ok := true
		for _, part := range parts {
			if n, err := strconv.Atoi(part); err != nil || n < 1 || n > 65535 {
				t.Errorf("service %s: port %q: %q is not a port number", name, p, part)
				ok = false
			}
		}
		if ok {
			n, _ := strconv.Atoi(parts[len(parts)-1])
			out = append(out, n)
		}
	}
	for _, p := range s.Expose {
		n, err := strconv.Atoi(fmt.Sprint(p))
		if err != nil {
			t.Errorf("service %s: expose %v is not a port number", name, p)
		}
		out = append(out, n)
	}
	return out
}

func TestComposeFile(t *testing.T) {
	c := loadCompose(t)
	df := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	var ours []string
	for b := range df.binaries {
		ours = append(ours, b)
	}
	slices.Sort(ours)
	if len(ours) == 0 {
		t.Fatal("the Dockerfile copies nothing into /usr/local/bin/")
	}
	clis := buildCLIs(t, ours)
	for _, b := range ours {
		for _, sub := range sortedKeys(clis[b]) {
			t.Logf("%s %s: flags %v", b, sub, sortedKeys(clis[b][sub]))
		}
	}
	envNames := map[string]string{}
	for _, k := range config.Keys() {
		envNames[config.EnvName(k)] = k
	}

	// What each service listens on, for endpoints other services name.
	listens := map[string][]int{}
	for name, s := range c.Services {
		listens[name] = published(t, name, s)
	}

	var names []string
	for name := range c.Services {
		names = append(names, name)
	}
	slices.Sort(names)
	daemons := 0
	for _, name := range names {
		s := c.Services[name]
		t.Run(name, func(t *testing.T) {
			built := s.Build.Kind != 0
			// build: a context with a Dockerfile; image: an expected public image.
			if built {
				ctx, file := s.Build.Value, "Dockerfile"
				if s.Build.Kind == yaml.MappingNode {
					var b struct {
						Context    string `yaml:"context"`
						Dockerfile string `yaml:"dockerfile"`
					}
					if err := s.Build.Decode(&b); err != nil {
						t.Fatal(err)
					}
					ctx = b.Context
					if b.Dockerfile != "" {
						file = b.Dockerfile
					}
				}
				if st, err := os.Stat(filepath.Join(root, ctx)); err != nil || !st.IsDir() {
					t.Errorf("build context %q is not a directory", ctx)
				}
				if _, err := os.Stat(filepath.Join(root, ctx, file)); err != nil {
					t.Errorf("build context %q has no %s", ctx, file)
				}
				if abs, _ := filepath.Abs(filepath.Join(root, ctx, file)); abs != mustAbs(t, filepath.Join(root, "Dockerfile")) {
					t.Errorf("built from %s; this test knows only the repository's Dockerfile", abs)
				}
			} else {
				repo, _, _ := strings.Cut(s.Image, ":")
				if !slices.Contains(allowedImages, repo) {
					t.Errorf("image %q is none of %v and is not built from the repository", s.Image, allowedImages)
				}
			}

			// The effective command line.
			entry := strOrList(t, "entrypoint", s.Entrypoint)
			cmd := strOrList(t, "command", s.Command)
			if built {
				if entry == nil {
					entry = df.entrypoint
					if cmd == nil {
						cmd = df.cmd
					}
				}
			}
			argv := append(slices.Clone(entry), cmd...)
			env := environment(t, "environment", s.Environment)

			if len(argv) > 0 && strings.HasPrefix(argv[0], "/usr/local/bin/") {
				bin := path.Base(argv[0])
				if !built || !df.binaries[bin] {
					t.Fatalf("runs %s, which the Dockerfile does not copy into /usr/local/bin/ (it copies %v)", argv[0], ours)
				}
				if len(argv) < 2 {
					t.Fatalf("runs %s without a subcommand", argv[0])
				}
				flags, ok := clis[bin][argv[1]]
				if !ok {
					t.Fatalf("%s has no subcommand %q (its usage lists %v)", bin, argv[1], sortedKeys(clis[bin]))
				}
				for _, a := range argv[2:] {
					if m := regexp.MustCompile(`^--?([a-z][a-z0-9-]*)(=|$)`).FindStringSubmatch(a); m != nil && !flags[m[1]] {
						t.Errorf("%s %s has no flag %s (it has %v)", bin, argv[1], a, sortedKeys(flags))
					}
				}
			} else if built && len(argv) > 0 {
				t.Errorf("a service built from the repository runs %q, not one of /usr/local/bin/%v", argv[0], ours)
			}

			// Environment: every STREAMTALLY_ variable is a configuration key.
			for k := range env {
				if strings.HasPrefix(k, "STREAMTALLY_") {
					if _, ok := envNames[k]; !ok {
						t.Errorf("environment %s is not a configuration key's variable", k)
					}
				}
			}

			// Bind mounts: the host file exists.
			targets := map[string]string{}
			for _, v := range s.Volumes {
				spec, ok := v.(string)
				if !ok {
					t.Errorf("volume %v: only the short syntax is checked here", v)
					continue
				}
				parts := strings.Split(spec, ":")
				if len(parts) < 2 {
					t.Errorf("volume %q has no container path", spec)
					continue
				}
				host := parts[0]
				if !strings.HasPrefix(host, ".") && !strings.HasPrefix(host, "/") {
					if _, ok := c.Volumes[host]; !ok {
						t.Errorf("named volume %q is not declared", host)
					}
					continue
				}
				p := host
				if !filepath.IsAbs(p) {
					p = filepath.Join(root, p)
				}
				if _, err := os.Stat(p); err != nil {
					t.Errorf("volume %q: host path %s does not exist", spec, host)
				}
				targets[parts[1]] = p
			}

			// Endpoints that name another service use a port it listens on.
			values := slices.Clone(argv)
			for _, v := range env {
				values = append(values, v)
			}
			for _, v := range values {
				host, port := endpointOf(v)
				if host == "" {
					continue
				}
				if _, isService := c.Services[host]; !isService {
					if host != "localhost" && net.ParseIP(host) == nil {
						t.Errorf("%q names host %s, which is no service of the file", v, host)
					}
					continue
				}
				if !slices.Contains(listens[host], port) {
					t.Errorf("%q: service %s publishes %v, not %d", v, host, listens[host], port)
				}
			}

			// depends_on: existing services.
			var deps []string
			switch s.DependsOn.Kind {
			case yaml.SequenceNode:
				_ = s.DependsOn.Decode(&deps)
			case yaml.MappingNode:
				var m map[string]struct {
					Condition string `yaml:"condition"`
				}
				if err := s.DependsOn.Decode(&m); err != nil {
					t.Fatal(err)
				}
				for d, cond := range m {
					deps = append(deps, d)
					if !slices.Contains([]string{"", "service_started", "service_healthy", "service_completed_successfully"}, cond.Condition) {
						t.Errorf("depends_on %s: condition %q", d, cond.Condition)
					}
				}
			}
			for _, d := range deps {
				if _, ok := c.Services[d]; !ok || d == name {
					t.Errorf("depends_on %q: no such other service", d)
				}
			}

			// The daemon: its configuration file is mounted and loads with
			// the service's environment, and its metrics port is published.
			if len(argv) >= 2 && path.Base(argv[0]) == "streamtally" && argv[1] == "run" {
				daemons++
				i := slices.Index(argv, "--config")
				if i < 0 || i+1 >= len(argv) {
					t.Fatalf("streamtally run without --config: %v", argv)
				}
				host, ok := targets[argv[i+1]]
				if !ok {
					t.Fatalf("--config %s is not a file mounted into the container (mounts: %v)", argv[i+1], targets)
				}
				for k := range envNames {
					t.Setenv(k, "")
					os.Unsetenv(k)
				}
				for k, v := range env {
					t.Setenv(k, v)
				}
				cfg, err := config.Load(host)
				if err != nil {
					t.Fatalf("the mounted configuration with the service's environment: %v", err)
				}
				_, port, err := net.SplitHostPort(cfg.Metrics.Addr)
				if err != nil || port != strconv.Itoa(metricsPort) {
					t.Errorf("metrics.addr is %q in the container; want port %d", cfg.Metrics.Addr, metricsPort)
				}
				if !slices.Contains(df.expose, metricsPort) {
					t.Errorf("the Dockerfile does not EXPOSE %d", metricsPort)
				}
				if !slices.Contains(listens[name], metricsPort) {
					t.Errorf(`the metrics port is not published; add to the %s service: ports: ["%d:%d"]`, name, metricsPort, metricsPort)
				}
			}
		})
	}
	if daemons == 0 {
		t.Error("no service runs streamtally run")
	}
}

// endpointOf finds host:port in a URL ("http://dynamodb:8000") or an
// address ("redis:6379"); "" when v is neither.
func endpointOf(v string) (string, int) {
	if u, err := url.Parse(v); err == nil && u.Scheme != "" && u.Host != "" {
		v = u.Host
	}
	host, p, err := net.SplitHostPort(v)
	if err != nil {
		return "", 0
	}
	port, err := strconv.Atoi(p)
	if err != nil || host == "" {
		return "", 0
	}
	return host, port
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
