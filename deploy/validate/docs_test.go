// Package validate checks the deployment files in deploy/ with the tools
// that really read them: compose-go for the compose file, the Kubernetes
// API types with a strict decoder for the manifests, systemd-analyze for
// the units, Prometheus' PromQL parser and promtool for the dashboard and
// the alert rules. It is a module of its own so that those heavy
// dependencies stay out of vigil's go.mod.
package validate

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// root is the repository root, seen from deploy/validate.
const root = "../.."

func repoPath(parts ...string) string { return filepath.Join(append([]string{root}, parts...)...) }

func readFile(t *testing.T, parts ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(repoPath(parts...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var metricRow = regexp.MustCompile("^\\| `(vigil_[a-z0-9_]+)`")

// documentedMetrics is the set docs/metrics.md lists (checked against a
// real node by the main module's TestMetricsDocumented).
func documentedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, "docs", "metrics.md")))
	for sc.Scan() {
		if m := metricRow.FindStringSubmatch(sc.Text()); m != nil {
			out[m[1]] = true
		}
	}
	if len(out) == 0 {
		t.Fatal("docs/metrics.md lists no metric")
	}
	return out
}

var envName = regexp.MustCompile("`(VIGIL_[A-Z0-9_]+)`")

// documentedEnv is every VIGIL_* variable docs/config.md names (checked
// against the CLI by the main module's TestConfigDocumented).
func documentedEnv(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, m := range envName.FindAllStringSubmatch(string(readFile(t, "docs", "config.md")), -1) {
		out[m[1]] = true
	}
	if len(out) == 0 {
		t.Fatal("docs/config.md names no variable")
	}
	return out
}

// checkEnv reports every VIGIL_* name in names that docs/config.md does not
// list: a deployment file that sets a variable vigil does not read.
func checkEnv(t *testing.T, where string, names []string) {
	t.Helper()
	doc := documentedEnv(t)
	for _, n := range names {
		if strings.HasPrefix(n, "VIGIL_") && !doc[n] {
			t.Errorf("%s sets %s, which docs/config.md does not list (vigil does not read it)", where, n)
		}
	}
}

// requireBinary returns the path of a tool the test needs. A missing one
// skips the test, or fails it under VIGIL_REQUIRE_INTEGRATION=1 (what
// scripts/test.sh sets, having installed it).
func requireBinary(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("VIGIL_REQUIRE_INTEGRATION") == "1" {
		t.Fatalf("%s is not on PATH (scripts/test.sh installs it)", name)
	}
	t.Skipf("%s is not on PATH (scripts/test.sh installs it)", name)
	return ""
}
