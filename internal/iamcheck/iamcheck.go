// Package iamcheck reads IAM policies, in a policy file or in a
// CloudFormation template's roles, into the DynamoDB actions they grant per
// resource class, so tests can hold the deployment files (deploy/ecs)
// against each other and against the AWS operations the binary really
// calls.
package iamcheck

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Class is the kind of resource an action is granted on.
type Class string

const (
	SourceTable  Class = "source table"         // table/${TableName}
	SourceStream Class = "source stream"        // table/${TableName}/stream/*
	LeaseTable   Class = "lease table"          // table/${AppName}: checkpoint.app names the lease table
	AnyResource  Class = "any resource (\"*\")" // actions without a resource type, such as ListStreams
)

// Grants maps each resource class to the sorted IAM actions allowed on it,
// for example SourceStream -> [dynamodb:DescribeStream dynamodb:GetRecords].
type Grants map[Class][]string

// Add grants action on class, keeping the list sorted and unique.
func (g Grants) Add(c Class, action string) {
	if i, found := slices.BinarySearch(g[c], action); !found {
		g[c] = slices.Insert(g[c], i, action)
	}
}

// String prints one line per class, in a fixed order.
func (g Grants) String() string {
	var b strings.Builder
	for _, c := range g.Classes() {
		fmt.Fprintf(&b, "%s: %s\n", c, strings.Join(g[c], ", "))
	}
	return b.String()
}

// Classes returns the classes with grants, sorted.
func (g Grants) Classes() []Class {
	cs := make([]Class, 0, len(g))
	for c := range g {
		cs = append(cs, c)
	}
	slices.Sort(cs)
	return cs
}

// Diff lists, per class, what is in want but not in got ("missing") and
// what is in got but not in want ("extra"), as readable lines.
func Diff(want, got Grants) (missing, extra []string) {
	for _, c := range union(want, got) {
		for _, a := range want[c] {
			if !slices.Contains(got[c], a) {
				missing = append(missing, fmt.Sprintf("%s on the %s", a, c))
			}
		}
		for _, a := range got[c] {
			if !slices.Contains(want[c], a) {
				extra = append(extra, fmt.Sprintf("%s on the %s", a, c))
			}
		}
	}
	return missing, extra
}

func union(a, b Grants) []Class {
	set := map[Class]bool{}
	for c := range a {
		set[c] = true
	}
	for c := range b {
		set[c] = true
	}
	out := make([]Class, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// resourceARN matches the DynamoDB ARNs the policies may name, with the
// placeholders of iam-policy.json (${Region}, ${AccountId}) or the
// CloudFormation pseudo parameters (${AWS::Partition}, ${AWS::Region},
// ${AWS::AccountId}). ${TableName} and ${AppName} are the parameters of both.
var resourceARN = regexp.MustCompile(`^arn:(?:aws|\$\{AWS::Partition\}):dynamodb:\$\{(?:AWS::)?Region\}:\$\{(?:AWS::)?AccountId\}:table/\$\{(TableName|AppName)\}(/stream/\*)?$`)

// ClassOf classifies a policy resource. Anything but the three scoped ARNs
// and "*" is an error: wildcards over tables would not be least privilege.
func ClassOf(resource string) (Class, error) {
	if resource == "*" {
		return AnyResource, nil
	}
	m := resourceARN.FindStringSubmatch(resource)
	switch {
	case m == nil:
		return "", fmt.Errorf("resource %q is not table/${TableName}, table/${TableName}/stream/* or table/${AppName}", resource)
	case m[1] == "TableName" && m[2] == "":
		return SourceTable, nil
	case m[1] == "TableName":
		return SourceStream, nil
	case m[2] == "":
		return LeaseTable, nil
	}
	return "", fmt.Errorf("resource %q: the lease table has no stream to read", resource)
}

// PolicyGrants reads the statements of an IAM policy document (decoded from
// JSON, or from the template with intrinsic functions as maps). Every
// statement must be a plain Allow of named dynamodb actions on classified
// resources: Deny, NotAction, NotResource, Condition and wildcards in
// actions would make the comparison with the observed calls meaningless.
func PolicyGrants(doc any) (Grants, error) {
	d, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("policy document is %T, want a map", doc)
	}
	if d["Version"] != "2012-10-17" {
		return nil, fmt.Errorf("policy Version %v, want 2012-10-17", d["Version"])
	}
	stmts, ok := d["Statement"].([]any)
	if !ok {
		return nil, fmt.Errorf("policy Statement is %T, want a list", d["Statement"])
	}
	g := Grants{}
	for i, s := range stmts {
		st, ok := s.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("statement %d is %T, want a map", i, s)
		}
		for k := range st {
			if k != "Sid" && k != "Effect" && k != "Action" && k != "Resource" {
				return nil, fmt.Errorf("statement %d: %s is not supported here", i, k)
			}
		}
		if st["Effect"] != "Allow" {
			return nil, fmt.Errorf("statement %d: Effect %v, want Allow", i, st["Effect"])
		}
		actions, err := strings1(st["Action"])
		if err != nil {
			return nil, fmt.Errorf("statement %d: Action: %w", i, err)
		}
		resources, err := strings1(st["Resource"])
		if err != nil {
			return nil, fmt.Errorf("statement %d: Resource: %w", i, err)
		}
		if len(actions) == 0 || len(resources) == 0 {
			return nil, fmt.Errorf("statement %d: no Action or no Resource", i)
		}
		for _, r := range resources {
			c, err := ClassOf(r)
			if err != nil {
				return nil, fmt.Errorf("statement %d: %w", i, err)
			}
			for _, a := range actions {
				if !strings.HasPrefix(a, "dynamodb:") || strings.ContainsAny(a, "*?") {
					return nil, fmt.Errorf("statement %d: action %q: want a named dynamodb:<Operation>", i, a)
				}
				g.Add(c, a)
			}
		}
	}
	return g, nil
}

// strings1 accepts a string, a list of strings, or Fn::Sub of a string
// without variables map (the template's form of an ARN).
func strings1(v any) ([]string, error) {
	switch v := v.(type) {
	case string:
		return []string{v}, nil
	case []any:
		var out []string
		for _, e := range v {
			s, err := strings1(e)
			if err != nil {
				return nil, err
			}
			out = append(out, s...)
		}
		return out, nil
	case map[string]any:
		if s, ok := v["Fn::Sub"].(string); ok && len(v) == 1 {
			return []string{s}, nil
		}
	}
	return nil, fmt.Errorf("%v: want a string, a list of strings or !Sub of a string", v)
}

// LoadPolicy reads an IAM policy JSON file.
func LoadPolicy(path string) (Grants, error) {
	var doc any
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &doc)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	g, err := PolicyGrants(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return g, nil
}

// Template is a CloudFormation template. Short-form intrinsic functions
// (!Ref X, !Sub s, !GetAtt A.B, !If [...]) are turned into their long form
// ({"Ref": "X"}, {"Fn::Sub": "s"}, {"Fn::GetAtt": ["A", "B"]},
// {"Fn::If": [...]}), as in a JSON template.
type Template struct {
	Parameters map[string]map[string]any
	Conditions map[string]any
	Resources  map[string]Resource
	Outputs    map[string]any
}

// Resource is one entry of Resources.
type Resource struct {
	Type       string
	Properties map[string]any
}

// LoadTemplate reads a CloudFormation YAML template.
func LoadTemplate(path string) (*Template, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t, err := ParseTemplate(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// ParseTemplate parses a YAML template.
func ParseTemplate(b []byte) (*Template, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, err
	}
	v, err := Value(&root)
	if err != nil {
		return nil, err
	}
	top, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("template is %T, want a map", v)
	}
	for k := range top {
		switch k {
		case "AWSTemplateFormatVersion", "Description", "Metadata", "Parameters", "Conditions", "Mappings", "Rules", "Resources", "Outputs", "Transform":
		default:
			return nil, fmt.Errorf("unknown top-level section %q", k)
		}
	}
	t := &Template{Parameters: map[string]map[string]any{}, Resources: map[string]Resource{}}
	t.Conditions, _ = top["Conditions"].(map[string]any)
	t.Outputs, _ = top["Outputs"].(map[string]any)
	params, _ := top["Parameters"].(map[string]any)
	for name, p := range params {
		pm, ok := p.(map[string]any)
		if !ok || pm["Type"] == nil {
			return nil, fmt.Errorf("parameter %s has no Type", name)
		}
		t.Parameters[name] = pm
	}
	res, ok := top["Resources"].(map[string]any)
	if !ok || len(res) == 0 {
		return nil, fmt.Errorf("no Resources")
	}
	for name, r := range res {
		rm, ok := r.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("resource %s is %T, want a map", name, r)
		}
		typ, _ := rm["Type"].(string)
		if typ == "" {
			return nil, fmt.Errorf("resource %s has no Type", name)
		}
		props, _ := rm["Properties"].(map[string]any)
		t.Resources[name] = Resource{Type: typ, Properties: props}
	}
	return t, nil
}

// Value converts a YAML node to maps, lists and scalars, with short-form
// intrinsic functions in their long form.
func Value(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) != 1 {
			return nil, fmt.Errorf("line %d: want one document", n.Line)
		}
		return Value(n.Content[0])
	case yaml.AliasNode:
		return Value(n.Alias)
	}
	fn := ""
	if strings.HasPrefix(n.Tag, "!") && !strings.HasPrefix(n.Tag, "!!") {
		fn = n.Tag[1:]
	}
	var v any
	switch n.Kind {
	case yaml.ScalarNode:
		if fn != "" {
			v = n.Value
		} else if err := n.Decode(&v); err != nil {
			return nil, err
		}
	case yaml.SequenceNode:
		list := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			cv, err := Value(c)
			if err != nil {
				return nil, err
			}
			list = append(list, cv)
		}
		v = list
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if _, dup := m[k]; dup {
				return nil, fmt.Errorf("line %d: duplicate key %q", n.Content[i].Line, k)
			}
			cv, err := Value(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m[k] = cv
		}
		v = m
	default:
		return nil, fmt.Errorf("line %d: unexpected YAML node kind %v", n.Line, n.Kind)
	}
	switch fn {
	case "":
		return v, nil
	case "Ref", "Condition":
		return map[string]any{fn: v}, nil
	case "GetAtt":
		if s, ok := v.(string); ok {
			a, b, found := strings.Cut(s, ".")
			if !found {
				return nil, fmt.Errorf("line %d: !GetAtt %q: want Resource.Attribute", n.Line, s)
			}
			v = []any{a, b}
		}
		return map[string]any{"Fn::GetAtt": v}, nil
	case "Base64", "Cidr", "FindInMap", "GetAZs", "ImportValue", "Join", "Select", "Split", "Sub", "Transform",
		"And", "Equals", "If", "Not", "Or", "Length", "ToJsonString":
		return map[string]any{"Fn::" + fn: v}, nil
	}
	return nil, fmt.Errorf("line %d: unknown tag !%s", n.Line, fn)
}

// Resource returns the resource name of type typ; exactly one must exist.
func (t *Template) Resource(typ string) (string, Resource, error) {
	var names []string
	for name, r := range t.Resources {
		if r.Type == typ {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if len(names) != 1 {
		return "", Resource{}, fmt.Errorf("want one %s, found %d: %v", typ, len(names), names)
	}
	return names[0], t.Resources[names[0]], nil
}

// TaskRole returns the logical name of the role the task definition's
// TaskRoleArn points at.
func (t *Template) TaskRole() (string, error) {
	_, td, err := t.Resource("AWS::ECS::TaskDefinition")
	if err != nil {
		return "", err
	}
	ga, ok := td.Properties["TaskRoleArn"].(map[string]any)
	if !ok {
		return "", fmt.Errorf("TaskRoleArn is %v, want !GetAtt <Role>.Arn", td.Properties["TaskRoleArn"])
	}
	ref, ok := ga["Fn::GetAtt"].([]any)
	if !ok || len(ref) != 2 || ref[1] != "Arn" {
		return "", fmt.Errorf("TaskRoleArn is %v, want !GetAtt <Role>.Arn", ga)
	}
	name, _ := ref[0].(string)
	if r, ok := t.Resources[name]; !ok || r.Type != "AWS::IAM::Role" {
		return "", fmt.Errorf("TaskRoleArn points at %q, which is not an AWS::IAM::Role of the template", name)
	}
	return name, nil
}

// RoleGrants collects the inline policies of an AWS::IAM::Role. Managed
// policies, conditional policy lists and other policy resources attached
// to the role are refused: their grants would be invisible to the check.
func (t *Template) RoleGrants(role string) (Grants, error) {
	r, ok := t.Resources[role]
	if !ok || r.Type != "AWS::IAM::Role" {
		return nil, fmt.Errorf("no AWS::IAM::Role %s", role)
	}
	if _, ok := r.Properties["ManagedPolicyArns"]; ok {
		return nil, fmt.Errorf("role %s has ManagedPolicyArns: its grants cannot be checked", role)
	}
	for name, other := range t.Resources {
		switch other.Type {
		case "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy":
			if strings.Contains(fmt.Sprint(other.Properties), role) {
				return nil, fmt.Errorf("%s %s may attach to role %s: keep the role's grants inline", other.Type, name, role)
			}
		}
	}
	policies, ok := r.Properties["Policies"].([]any)
	if !ok || len(policies) == 0 {
		return nil, fmt.Errorf("role %s: Policies is %v, want a list of inline policies", role, r.Properties["Policies"])
	}
	all := Grants{}
	for i, p := range policies {
		pm, _ := p.(map[string]any)
		g, err := PolicyGrants(pm["PolicyDocument"])
		if err != nil {
			return nil, fmt.Errorf("role %s policy %d (%v): %w", role, i, pm["PolicyName"], err)
		}
		for c, as := range g {
			for _, a := range as {
				all.Add(c, a)
			}
		}
	}
	return all, nil
}

// TaskRoleGrants loads the template at path and returns the grants of the
// role its task definition runs as.
func TaskRoleGrants(path string) (Grants, error) {
	t, err := LoadTemplate(path)
	if err != nil {
		return nil, err
	}
	role, err := t.TaskRole()
	if err != nil {
		return nil, err
	}
	return t.RoleGrants(role)
}
