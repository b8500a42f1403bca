package config

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeDocumentsEveryKey keeps the README's configuration reference in
// step with the keys Load accepts: each key, its default and its
// environment variable must appear in one table row.
func TestReadmeDocumentsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "| `") {
			key := strings.Trim(strings.SplitN(line, "|", 3)[1], " `")
			rows[key] = line
		}
	}
	for _, k := range Keys() {
		row, ok := rows[k]
		if !ok {
			t.Errorf("README has no row for %s", k)
			continue
		}
		if !strings.Contains(row, "`"+EnvName(k)+"`") {
			t.Errorf("README row for %s lacks %s", k, EnvName(k))
		}
		if d := Default(k); d != "" && !strings.Contains(row, "`"+d+"`") {
			t.Errorf("README row for %s lacks the default %q", k, d)
		}
	}
}
