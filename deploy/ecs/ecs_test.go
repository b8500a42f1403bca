package ecs_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/internal/iamcheck"
)

// The IAM policy against the operations the binary calls is checked by the
// end-to-end tests (cmd/streamtally/iam_test.go); here the files are held
// against each other and against the code.

func loadJSON(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(".", name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m
}

func loadTemplate(t *testing.T) *iamcheck.Template {
	t.Helper()
	tpl, err := iamcheck.LoadTemplate("cloudformation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return tpl
}

func repoFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPolicyScopesEveryActionToOneResource(t *testing.T) {
	g, err := iamcheck.LoadPolicy("iam-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("iam-policy.json grants:\n%s", g)
	for _, c := range []iamcheck.Class{iamcheck.SourceTable, iamcheck.SourceStream, iamcheck.LeaseTable} {
		if len(g[c]) == 0 {
			t.Errorf("nothing granted on the %s", c)
		}
	}
	if len(g[iamcheck.AnyResource]) > 0 {
		t.Errorf("actions on every resource: %v", g[iamcheck.AnyResource])
	}
}

func TestTemplateTaskRoleGrantsTheSameAsThePolicyFile(t *testing.T) {
	want, err := iamcheck.LoadPolicy("iam-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	got, err := iamcheck.TaskRoleGrants("cloudformation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	missing, extra := iamcheck.Diff(want, got)
	for _, m := range missing {
		t.Errorf("iam-policy.json grants %s, the template's task role does not", m)
	}
	for _, e := range extra {
		t.Errorf("the template's task role grants %s, iam-policy.json does not", e)
	}
}

func TestPolicyGrantsRefusesWhatCannotBeChecked(t *testing.T) {
	const table = "arn:aws:dynamodb:${Region}:${AccountId}:table/${TableName}"
	for name, stmt := range map[string]string{
		"deny":             `{"Effect":"Deny","Action":"dynamodb:Scan","Resource":"` + table + `"}`,
		"wildcard action":  `{"Effect":"Allow","Action":"dynamodb:*","Resource":"` + table + `"}`,
		"other service":    `{"Effect":"Allow","Action":"s3:GetObject","Resource":"` + table + `"}`,
		"every table":      `{"Effect":"Allow","Action":"dynamodb:Scan","Resource":"arn:aws:dynamodb:${Region}:${AccountId}:table/*"}`,
		"lease stream":     `{"Effect":"Allow","Action":"dynamodb:GetRecords","Resource":"arn:aws:dynamodb:${Region}:${AccountId}:table/${AppName}/stream/*"}`,
		"condition":        `{"Effect":"Allow","Action":"dynamodb:Scan","Resource":"` + table + `","Condition":{}}`,
		"not resource":     `{"Effect":"Allow","Action":"dynamodb:Scan","NotResource":"` + table + `"}`,
		"literal table":    `{"Effect":"Allow","Action":"dynamodb:Scan","Resource":"arn:aws:dynamodb:eu-west-1:123456789012:table/Donations"}`,
		"index of a table": `{"Effect":"Allow","Action":"dynamodb:Query","Resource":"` + table + `/index/*"}`,
	} {
		var doc any
		if err := json.Unmarshal([]byte(`{"Version":"2012-10-17","Statement":[`+stmt+`]}`), &doc); err != nil {
			t.Fatal(err)
		}
		if g, err := iamcheck.PolicyGrants(doc); err == nil {
			t.Errorf("%s: accepted, grants %v", name, g)
		}
	}
	for res, want := range map[string]iamcheck.Class{
		"*": iamcheck.AnyResource,
		"arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${TableName}":          iamcheck.SourceTable,
		"arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${TableName}/stream/*": iamcheck.SourceStream,
		"arn:aws:dynamodb:${Region}:${AccountId}:table/${AppName}":                                    iamcheck.LeaseTable,
	} {
		if got, err := iamcheck.ClassOf(res); err != nil || got != want {
			t.Errorf("ClassOf(%s) = %q, %v; want %q", res, got, err, want)
		}
	}
}

func TestShortTagsBecomeIntrinsicFunctions(t *testing.T) {
	tpl, err := iamcheck.ParseTemplate([]byte(`
Parameters:
  P: {Type: String}
Resources:
  R:
    Type: X::Y
    Properties:
      A: !Ref P
      B: !Sub "${P}-x"
      C: !GetAtt Q.Arn
      D: !If [Cond, [1, 2], !Ref AWS::NoValue]
      E: !Join [",", [!Ref P, b]]
      F: !Sub ["${a}", {a: !Ref P}]
`))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(tpl.Resources["R"].Properties)
	want := `{"A":{"Ref":"P"},"B":{"Fn::Sub":"${P}-x"},"C":{"Fn::GetAtt":["Q","Arn"]},"D":{"Fn::If":["Cond",[1,2],{"Ref":"AWS::NoValue"}]},"E":{"Fn::Join":[",",[{"Ref":"P"},"b"]]},"F":{"Fn::Sub":["${a}",{"a":{"Ref":"P"}}]}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if _, err := iamcheck.ParseTemplate([]byte("Resources:\n  R: {Type: X, Properties: {A: !Bogus x}}\n")); err == nil {
		t.Fatal("unknown tag accepted")
	}
}

// TestTaskDefinitionFile checks task-definition.json against what the
// image and the daemon need.
func TestTaskDefinitionFile(t *testing.T) {
	td := loadJSON(t, "task-definition.json")
	for k, want := range map[string]any{"networkMode": "awsvpc", "requiresCompatibilities": []any{"FARGATE"}, "taskRoleArn": "${TaskRoleArn}", "executionRoleArn": "${ExecutionRoleArn}"} {
		if fmt.Sprint(td[k]) != fmt.Sprint(want) {
			t.Errorf("%s = %v, want %v", k, td[k], want)
		}
	}
	cds, _ := td["containerDefinitions"].([]any)
	if len(cds) != 1 {
		t.Fatalf("%d container definitions, want 1", len(cds))
	}
	c := cds[0].(map[string]any)
	for k, want := range map[string]string{
		"image":                  "${Image}",
		"essential":              "true",
		"readonlyRootFilesystem": "true",
		"stopTimeout":            "30",
		"healthCheck":            "map[command:[CMD /usr/local/bin/streamtally healthcheck] interval:15 retries:3 startPeriod:30 timeout:5]",
		"portMappings":           "[map[containerPort:9090 name:metrics protocol:tcp]]",
		"logConfiguration":       "map[logDriver:awslogs options:map[awslogs-group:/ecs/streamtally awslogs-region:${Region} awslogs-stream-prefix:streamtally]]",
	} {
		if got := fmt.Sprint(c[k]); got != want {
			t.Errorf("%s = %s, want %s", k, got, want)
		}
	}
	if _, ok := c["command"]; ok {
		t.Error("command is set: the image's default (run --config /etc/streamtally/streamtally.yaml) is what deploy/ecs/README.md describes")
	}

	// The image runs as distroless's nonroot user, UID and GID 65532.
	dockerfile := repoFile(t, "Dockerfile")
	if !regexp.MustCompile(`(?m)^FROM \S+:nonroot\s*$`).MatchString(dockerfile) || !regexp.MustCompile(`(?m)^USER nonroot(:nonroot)?\s*$`).MatchString(dockerfile) {
		t.Error("the Dockerfile's final stage is no longer distroless nonroot: check the task definition's user")
	}
	if c["user"] != "65532:65532" {
		t.Errorf("user = %v, want 65532:65532 (distroless nonroot)", c["user"])
	}
	if !strings.Contains(dockerfile, `CMD ["run", "--config", "/etc/streamtally/streamtally.yaml"]`) {
		t.Error("the Dockerfile's CMD no longer reads /etc/streamtally/streamtally.yaml, which deploy/ecs/README.md tells users to bake in")
	}
	if !regexp.MustCompile(`(?m)^COPY .*/streamtally .*/usr/local/bin/`).MatchString(dockerfile) {
		t.Error("the Dockerfile does not copy streamtally to /usr/local/bin/, where the health check runs it")
	}

	// The health check: the subcommand exists, and its default address is
	// the daemon's default metrics.addr, the mapped port.
	main := repoFile(t, "cmd/streamtally/main.go")
	if !strings.Contains(main, `case "healthcheck":`) {
		t.Error("cmd/streamtally/main.go has no healthcheck subcommand")
	}
	if hc := repoFile(t, "cmd/streamtally/healthcheck.go"); !strings.Contains(hc, `"127.0.0.1:9090"`) {
		t.Error("streamtally healthcheck no longer defaults to 127.0.0.1:9090")
	}
	if d := config.Default("metrics.addr"); d != ":9090" {
		t.Errorf("metrics.addr defaults to %q; the task definition maps 9090", d)
	}
	grace, err := time.ParseDuration(config.Default("checkpoint.shutdown_grace"))
	if err != nil || time.Duration(c["stopTimeout"].(float64))*time.Second <= grace {
		t.Errorf("stopTimeout %v s must exceed checkpoint.shutdown_grace %s", c["stopTimeout"], config.Default("checkpoint.shutdown_grace"))
	}

	// Environment and secrets: real configuration keys, and the listed ones.
	var env, secrets []string
	for _, e := range c["environment"].([]any) {
		env = append(env, e.(map[string]any)["name"].(string))
	}
	for _, s := range c["secrets"].([]any) {
		secrets = append(secrets, s.(map[string]any)["name"].(string))
	}
	known := map[string]bool{}
	for _, k := range config.Keys() {
		known[config.EnvName(k)] = true
	}
	for _, n := range append(slices.Clone(env), secrets...) {
		if !known[n] {
			t.Errorf("%s is not the environment name of any configuration key", n)
		}
	}
	sort.Strings(env)
	if want := []string{"STREAMTALLY_CHECKPOINT_APP", "STREAMTALLY_LOG_LEVEL", "STREAMTALLY_REDIS_ADDR", "STREAMTALLY_REDIS_PREFIX", "STREAMTALLY_SOURCE_REGION", "STREAMTALLY_SOURCE_TABLE"}; !slices.Equal(env, want) {
		t.Errorf("environment %v, want %v", env, want)
	}
	if !slices.Equal(secrets, []string{"STREAMTALLY_REDIS_PASSWORD"}) {
		t.Errorf("secrets %v, want the Redis password only", secrets)
	}
}

// TestTemplateTaskDefinitionMatchesTheFile compares the template's task
// definition with task-definition.json field by field. A !Ref P matches
// the file's ${P} or P's default; !GetAtt XRole.Arn matches ${XRoleArn};
// !If takes its first branch; a log group !Ref matches /ecs/....
func TestTemplateTaskDefinitionMatchesTheFile(t *testing.T) {
	tpl := loadTemplate(t)
	file := loadJSON(t, "task-definition.json")
	_, td, err := tpl.Resource("AWS::ECS::TaskDefinition")
	if err != nil {
		t.Fatal(err)
	}
	delete(file, "family") // the stack name in the template
	props := map[string]any{}
	for k, v := range td.Properties {
		if k != "Family" {
			props[k] = v
		}
	}
	for _, d := range compare(tpl, "", file, props) {
		t.Error(d)
	}
}

func compare(tpl *iamcheck.Template, path string, want, got any) []string {
	if m, ok := got.(map[string]any); ok && len(m) == 1 {
		for fn, arg := range m {
			switch fn {
			case "Fn::If":
				if a, ok := arg.([]any); ok && len(a) == 3 {
					return compare(tpl, path, want, a[1])
				}
			case "Ref":
				if refMatches(tpl, arg.(string), want) {
					return nil
				}
				return []string{fmt.Sprintf("%s: file has %v, template has !Ref %v", path, want, arg)}
			case "Fn::GetAtt":
				a, _ := arg.([]any)
				if s, ok := want.(string); ok && len(a) == 2 && a[1] == "Arn" &&
					(s == "${"+fmt.Sprint(a[0])+"Arn}" || s == "${"+strings.TrimPrefix(fmt.Sprint(a[0]), "Task")+"Arn}") {
					return nil
				}
				return []string{fmt.Sprintf("%s: file has %v, template has !GetAtt %v", path, want, arg)}
			}
		}
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: file has a map, template has %v", path, got)}
		}
		gl := map[string]any{}
		for k, v := range g {
			gl[strings.ToLower(k[:1])+k[1:]] = v
		}
		var out []string
		for k := range union2(w, gl) {
			wv, inW := w[k]
			gv, inG := gl[k]
			switch {
			case !inW:
				out = append(out, fmt.Sprintf("%s.%s: only in the template", path, k))
			case !inG:
				out = append(out, fmt.Sprintf("%s.%s: only in the file", path, k))
			default:
				out = append(out, compare(tpl, path+"."+k, wv, gv)...)
			}
		}
		sort.Strings(out)
		return out
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return []string{fmt.Sprintf("%s: file has %v, template has %v", path, want, got)}
		}
		var out []string
		for i := range w {
			out = append(out, compare(tpl, path+"["+strconv.Itoa(i)+"]", w[i], g[i])...)
		}
		return out
	}
	if fmt.Sprint(want) != fmt.Sprint(got) {
		return []string{fmt.Sprintf("%s: file has %v, template has %v", path, want, got)}
	}
	return nil
}

func refMatches(tpl *iamcheck.Template, name string, want any) bool {
	s, ok := want.(string)
	if !ok {
		return false
	}
	if s == "${"+name+"}" || (name == "AWS::Region" && s == "${Region}") || (name == "AWS::AccountId" && s == "${AccountId}") {
		return true
	}
	if p, ok := tpl.Parameters[name]; ok {
		d, has := p["Default"]
		return has && fmt.Sprint(d) == s
	}
	if r, ok := tpl.Resources[name]; ok && r.Type == "AWS::Logs::LogGroup" {
		return strings.HasPrefix(s, "/ecs/")
	}
	return false
}

func union2(a, b map[string]any) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// TestTemplateResources checks the parameters, the service, the roles and
// that every reference resolves.
func TestTemplateResources(t *testing.T) {
	tpl := loadTemplate(t)
	for name, def := range map[string]string{
		"Image": "", "TableName": "", "AppName": "streamtally", "RedisAddr": "", "RedisPrefix": "tally",
		"RedisPasswordSecretArn": "", "LogLevel": "info", "VpcId": "", "Subnets": "", "SecurityGroups": "",
		"DesiredCount": "2", "Cpu": "256", "Memory": "512", "LogRetentionDays": "30",
	} {
		p, ok := tpl.Parameters[name]
		if !ok {
			t.Errorf("no parameter %s", name)
			continue
		}
		if d, has := p["Default"]; def != "" && fmt.Sprint(d) != def {
			t.Errorf("parameter %s defaults to %v, want %s", name, d, def)
		} else if def == "" && has && name != "RedisPasswordSecretArn" {
			t.Errorf("parameter %s has a default (%v); it must be given", name, d)
		}
	}
	if d, ok := tpl.Parameters["RedisPasswordSecretArn"]["Default"]; !ok || d != "" {
		t.Error("RedisPasswordSecretArn must be optional (default empty)")
	}

	for _, typ := range []string{"AWS::ECS::Cluster", "AWS::Logs::LogGroup", "AWS::ECS::TaskDefinition", "AWS::ECS::Service", "AWS::EC2::SecurityGroup"} {
		if _, _, err := tpl.Resource(typ); err != nil {
			t.Error(err)
		}
	}
	_, lg, _ := tpl.Resource("AWS::Logs::LogGroup")
	if lg.Properties["RetentionInDays"] == nil {
		t.Error("the log group keeps logs forever: set RetentionInDays")
	}

	_, svc, err := tpl.Resource("AWS::ECS::Service")
	if err != nil {
		t.Fatal(err)
	}
	dc, _ := svc.Properties["DeploymentConfiguration"].(map[string]any)
	if fmt.Sprint(dc["MinimumHealthyPercent"]) != "100" || fmt.Sprint(dc["MaximumPercent"]) != "200" {
		t.Errorf("DeploymentConfiguration %v, want MinimumHealthyPercent 100, MaximumPercent 200", dc)
	}
	if svc.Properties["LaunchType"] != "FARGATE" {
		t.Errorf("LaunchType %v, want FARGATE", svc.Properties["LaunchType"])
	}
	if fmt.Sprint(svc.Properties["DesiredCount"]) != "map[Ref:DesiredCount]" {
		t.Errorf("DesiredCount %v, want !Ref DesiredCount", svc.Properties["DesiredCount"])
	}
	net := fmt.Sprint(svc.Properties["NetworkConfiguration"])
	for _, ref := range []string{"Ref:Subnets", "Ref:SecurityGroups", "Ref:AssignPublicIp"} {
		if !strings.Contains(net, ref) {
			t.Errorf("the service's network configuration lacks %s: %s", ref, net)
		}
	}

	// The execution role pulls the image, writes logs, and reads the
	// Redis password secret only when one is given.
	_, td, _ := tpl.Resource("AWS::ECS::TaskDefinition")
	exec := fmt.Sprint(td.Properties["ExecutionRoleArn"])
	execRole := strings.TrimSuffix(strings.TrimPrefix(exec, "map[Fn::GetAtt:["), " Arn]]")
	er, ok := tpl.Resources[execRole]
	if !ok || er.Type != "AWS::IAM::Role" {
		t.Fatalf("ExecutionRoleArn %s is not a role of the template", exec)
	}
	if s := fmt.Sprint(er.Properties["ManagedPolicyArns"]); !strings.Contains(s, "policy/service-role/AmazonECSTaskExecutionRolePolicy") {
		t.Errorf("execution role lacks AmazonECSTaskExecutionRolePolicy: %s", s)
	}
	pol := fmt.Sprint(er.Properties["Policies"])
	if !strings.Contains(pol, "Fn::If:[HasRedisPassword") || !strings.Contains(pol, "secretsmanager:GetSecretValue") || !strings.Contains(pol, "Resource:map[Ref:RedisPasswordSecretArn]") {
		t.Errorf("execution role does not read exactly the Redis password secret when given: %s", pol)
	}
	taskRole, err := tpl.TaskRole()
	if err != nil {
		t.Fatal(err)
	}
	if taskRole == execRole {
		t.Error("the task and execution roles are the same role")
	}
	for _, role := range []string{taskRole, execRole} {
		trust := fmt.Sprint(tpl.Resources[role].Properties["AssumeRolePolicyDocument"])
		if !strings.Contains(trust, "Service:ecs-tasks.amazonaws.com") {
			t.Errorf("role %s is not assumable by ECS tasks: %s", role, trust)
		}
	}

	checkReferences(t, tpl)
}

var pseudo = map[string]bool{"AWS::AccountId": true, "AWS::NoValue": true, "AWS::Partition": true, "AWS::Region": true, "AWS::StackId": true, "AWS::StackName": true, "AWS::URLSuffix": true}

// checkReferences resolves every Ref, GetAtt, ${} in Sub and condition
// name, and fails on parameters nothing uses.
func checkReferences(t *testing.T, tpl *iamcheck.Template) {
	used := map[string]bool{}
	refName := func(where, name string) {
		base, _, _ := strings.Cut(name, ".")
		if _, isParam := tpl.Parameters[name]; isParam {
			used[name] = true
			return
		}
		if _, isRes := tpl.Resources[base]; isRes || pseudo[name] {
			return
		}
		t.Errorf("%s: reference to %q, which is neither a parameter, a resource nor a pseudo parameter", where, name)
	}
	subVar := regexp.MustCompile(`\$\{([^!}][^}]*)\}`)
	var walk func(where string, v any)
	walk = func(where string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				switch k {
				case "Ref":
					refName(where, fmt.Sprint(e))
				case "Fn::GetAtt":
					a, _ := e.([]any)
					if len(a) != 2 {
						t.Errorf("%s: !GetAtt %v", where, e)
					} else if _, ok := tpl.Resources[fmt.Sprint(a[0])]; !ok {
						t.Errorf("%s: !GetAtt of unknown resource %v", where, a[0])
					}
				case "Fn::Sub":
					s, ok := e.(string)
					if !ok {
						t.Errorf("%s: !Sub with a variables map is not used here: %v", where, e)
						break
					}
					for _, m := range subVar.FindAllStringSubmatch(s, -1) {
						refName(where, m[1])
					}
				case "Fn::If":
					a, _ := e.([]any)
					if len(a) != 3 {
						t.Errorf("%s: !If %v", where, e)
					} else if _, ok := tpl.Conditions[fmt.Sprint(a[0])]; !ok {
						t.Errorf("%s: !If on unknown condition %v", where, a[0])
					}
				}
				walk(where, e)
			}
		case []any:
			for _, e := range v {
				walk(where, e)
			}
		}
	}
	for name, r := range tpl.Resources {
		walk("resource "+name, r.Properties)
	}
	for name, c := range tpl.Conditions {
		walk("condition "+name, c)
	}
	walk("outputs", tpl.Outputs)
	for name := range tpl.Parameters {
		if !used[name] {
			t.Errorf("parameter %s is never used", name)
		}
	}
}

// TestPlaceholdersAreDocumented checks that every ${X} the JSON files
// carry is explained in deploy/ecs/README.md.
func TestPlaceholdersAreDocumented(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(".", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`\$\{[A-Za-z]+\}`)
	for _, f := range []string{"task-definition.json", "iam-policy.json"} {
		b, err := os.ReadFile(filepath.Join(".", f))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range re.FindAllString(string(b), -1) {
			if !strings.Contains(string(readme), "`"+p+"`") {
				t.Errorf("%s uses %s, which README.md does not explain", f, p)
			}
		}
	}
}

// TestBakedViewsFileLoads loads the README's example views file with the
// task definition's environment, as the container would.
func TestBakedViewsFileLoads(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(".", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no yaml example")
	}
	path := filepath.Join(t.TempDir(), "streamtally.yaml")
	if err := os.WriteFile(path, m[1], 0o644); err != nil {
		t.Fatal(err)
	}
	for _, k := range config.Keys() {
		t.Setenv(config.EnvName(k), "")
		os.Unsetenv(config.EnvName(k))
	}
	sample := map[string]string{"${TableName}": "Donations", "${Region}": "eu-west-1", "${AppName}": "donations-dashboard", "${RedisAddr}": "redis.internal:6379"}
	td := loadJSON(t, "task-definition.json")
	c := td["containerDefinitions"].([]any)[0].(map[string]any)
	for _, e := range c["environment"].([]any) {
		e := e.(map[string]any)
		v := e["value"].(string)
		if s, ok := sample[v]; ok {
			v = s
		}
		t.Setenv(e["name"].(string), v)
	}
	t.Setenv("STREAMTALLY_REDIS_PASSWORD", "from-the-secret")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source.Table != "Donations" || cfg.Source.Region != "eu-west-1" || cfg.Source.Endpoint != "" ||
		cfg.Checkpoint.App != "donations-dashboard" || cfg.Checkpoint.Table != "donations-dashboard" ||
		cfg.Redis.Addr != "redis.internal:6379" || cfg.Redis.Password != "from-the-secret" ||
		cfg.Metrics.Addr != ":9090" || len(cfg.Views) == 0 {
		t.Fatalf("configuration in the task: %+v", cfg.Redacted())
	}
}
