package validate

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The unit's ExecStart binary; systemd-analyze wants it to exist.
const unitBinary = "/usr/local/bin/vigil"

// verifyUnit runs systemd-analyze verify on a unit (its text in dir under
// name), with ExecStart pointed at an executable that exists here, and
// returns what it printed: any warning (an unknown key, a value it cannot
// parse) counts as a failure.
func verifyUnit(t *testing.T, analyze, dir, name string, unit []byte) string {
	t.Helper()
	stub := filepath.Join(dir, "vigil")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), bytes.ReplaceAll(unit, []byte(unitBinary), []byte(stub)), 0o644); err != nil {
		t.Fatal(err)
	}
	instance := strings.Replace(name, "@.", "@meter.", 1)
	cmd := exec.Command(analyze, "verify", "./"+instance)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out) + err.Error()
	}
	return string(out)
}

func TestSystemdUnits(t *testing.T) {
	analyze := requireBinary(t, "systemd-analyze")
	units, _ := filepath.Glob(repoPath("deploy", "systemd", "*.service"))
	if len(units) == 0 {
		t.Fatal("no units in deploy/systemd")
	}
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(u)
		if !bytes.Contains(b, []byte("ExecStart="+unitBinary+" serve")) {
			t.Errorf("%s: ExecStart is not %s serve", name, unitBinary)
		}
		if out := verifyUnit(t, analyze, t.TempDir(), name, b); strings.TrimSpace(out) != "" {
			t.Errorf("systemd-analyze verify %s:\n%s", name, out)
		}
	}
	// The environment files set only variables vigil reads, and every
	// instance file names its roles and node id.
	envs, _ := filepath.Glob(repoPath("deploy", "systemd", "*.env"))
	for _, f := range envs {
		vars := envFileVars(t, f)
		var names []string
		for k := range vars {
			names = append(names, k)
		}
		checkEnv(t, filepath.Base(f), names)
		if filepath.Base(f) == "vigil.env" {
			continue
		}
		if vars["VIGIL_ROLES"] == "" || vars["VIGIL_NODE_ID"] == "" {
			t.Errorf("%s: no VIGIL_ROLES or VIGIL_NODE_ID", filepath.Base(f))
		}
	}
}

// envFileVars reads a systemd EnvironmentFile (KEY=VALUE lines, # comments).
func envFileVars(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Errorf("%s: %q is not KEY=VALUE", path, l)
			continue
		}
		out[k] = v
	}
	return out
}

// systemd-analyze reports what the test must fail on.
func TestSystemdVerifyCatchesMistakes(t *testing.T) {
	analyze := requireBinary(t, "systemd-analyze")
	b := readFile(t, "deploy", "systemd", "vigil@.service")
	bad := bytes.Replace(b, []byte("Restart=on-failure"), []byte("Restart=on-falure\nRestartSecs=2s"), 1)
	out := verifyUnit(t, analyze, t.TempDir(), "vigil@.service", bad)
	if !strings.Contains(out, "on-falure") || !strings.Contains(out, "RestartSecs") {
		t.Errorf("a bad value and an unknown key: systemd-analyze said %q", out)
	}
}
