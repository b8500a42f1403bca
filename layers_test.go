package streamtally_test

import (
	"os/exec"
	"strings"
	"testing"
)

// layers is the package graph of docs/ARCHITECTURE.md: a package may
// import only packages of a lower layer. Test infrastructure and the
// command-line tools are outside it.
var layers = map[string]int{
	"cmd/streamtally":   5,
	"recount":           4,
	"gateway":           4,
	"publish":           3,
	"metrics":           3,
	"consumer":          2,
	"source/ddbstreams": 2,
	"config":            2,
	"aggregate":         1,
	"lease":             1,
	"internal/ddbjson":  1,
	"":                  0, // the root: the domain
	"internal/retry":    0,
}

const module = "github.com/streamtally/streamtally"

// TestPackagesImportOnlyLowerLayers keeps the documented graph true, and
// with it the two rules a new source or store relies on: the fold knows
// no store, config or AWS type, and the domain no AWS type.
func TestPackagesImportOnlyLowerLayers(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}}:{{join .Imports " "}}`, "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, imports, _ := strings.Cut(line, ":")
		rel, ours := relative(path)
		layer, ruled := layers[rel]
		if !ours || !ruled {
			continue
		}
		seen[rel] = true
		for _, imp := range strings.Fields(imports) {
			if r, ok := relative(imp); ok {
				if l, ok := layers[r]; ok && l >= layer {
					t.Errorf("%s (layer %d) imports %s (layer %d)", name(rel), layer, name(r), l)
				}
			}
			if layer <= 1 && rel != "lease" && rel != "internal/ddbjson" && (strings.HasPrefix(imp, "github.com/aws/") || strings.HasPrefix(imp, "github.com/redis/")) {
				t.Errorf("%s imports %s: the domain and the fold stay free of AWS and Redis", name(rel), imp)
			}
		}
	}
	for rel := range layers {
		if !seen[rel] {
			t.Errorf("package %s is in the layers but not in the module", name(rel))
		}
	}
}

func relative(path string) (string, bool) {
	if path == module {
		return "", true
	}
	rel, ok := strings.CutPrefix(path, module+"/")
	return rel, ok
}

func name(rel string) string {
	if rel == "" {
		return "streamtally (root)"
	}
	return rel
}
