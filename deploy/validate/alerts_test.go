package validate

import (
	"encoding/json"
	"log/slog"
	"os/exec"
	"slices"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"sigs.k8s.io/yaml"
)

var alertsFile = repoPath("deploy", "prometheus", "alerts.yml")

// The alerts the operator needs, by what they watch.
var requiredAlerts = map[string]string{
	"the meter has no leader":          "VigilMeterNoLeader",
	"the backlog is growing":           "VigilUploadBacklogGrowing",
	"the RTSP backlog is growing":      "VigilRecorderBacklogGrowing",
	"storage errors":                   "VigilStorageErrors",
	"a stream stopped uploading":       "VigilStreamStoppedUploading",
	"a purge is stuck":                 "VigilPurgeStuck",
	"a node is cut off from the meter": "VigilMeterNodeWithoutLeader",
}

func TestAlertRules(t *testing.T) {
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	if groups == nil {
		t.FailNow()
	}
	documented := documentedMetrics(t)
	var alerts []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			names, err := exprMetrics(r.Expr)
			if err != nil {
				t.Errorf("%s: %v", r.Alert, err)
			}
			for _, n := range names {
				if !documented[n] {
					t.Errorf("%s uses %s, which docs/metrics.md does not list", r.Alert, n)
				}
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s needs a severity, a summary and a description", r.Alert)
			}
		}
	}
	for what, name := range requiredAlerts {
		if !slices.Contains(alerts, name) {
			t.Errorf("no alert %s (%s)", name, what)
		}
	}

	// Every alert is unit-tested both ways: a case where it fires and one
	// where it must not.
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string            `json:"alertname"`
				ExpAlerts []json.RawMessage `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(readFile(t, "deploy", "prometheus", "alerts_test.yml"), &tests); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, a := range alerts {
		if !fires[a] || !quiet[a] {
			t.Errorf("%s: alerts_test.yml must show it firing (%v) and staying quiet (%v)", a, fires[a], quiet[a])
		}
	}
}

// promtool checks the rules as Prometheus loads them, then runs their unit
// tests (alerts_test.yml).
func TestPromtool(t *testing.T) {
	promtool := requireBinary(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
		{"check", "config", "--syntax-only", "../compose/prometheus.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = repoPath("deploy", "prometheus")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}
