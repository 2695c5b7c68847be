package validate

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
)

// promql parses as Prometheus does (its default functions, no
// experimental ones).
var promql = parser.NewParser(parser.Options{})

// grafanaVars replaces the dashboard's variables with values a query can
// take, so that the expression parses as Prometheus will see it.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h", "$instance", ".*")

// exprMetrics parses expr and returns the metric names it selects, a
// histogram's _bucket, _count and _sum series under the histogram's name.
func exprMetrics(expr string) ([]string, error) {
	e, err := promql.ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var out []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if strings.HasSuffix(name, suffix) && !strings.HasSuffix(name, "_total") {
					name = strings.TrimSuffix(name, suffix)
				}
			}
			out = append(out, name)
		}
		return nil
	})
	return out, nil
}

type grafanaPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos *struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaDashboard struct {
	UID        string         `json:"uid"`
	Title      string         `json:"title"`
	Panels     []grafanaPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"list"`
	} `json:"templating"`
}

var unknownVar = regexp.MustCompile(`\$\{?[A-Za-z_]+`)

func TestGrafanaDashboard(t *testing.T) {
	var d grafanaDashboard
	dec := json.NewDecoder(strings.NewReader(string(readFile(t, "deploy", "grafana", "vigil.json"))))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("deploy/grafana/vigil.json: %v", err)
	}
	if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
		t.Fatal("the dashboard has no uid, title or panels")
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	if !vars["datasource"] || !vars["instance"] {
		t.Errorf("the dashboard needs the variables datasource and instance, has %v", vars)
	}
	documented := documentedMetrics(t)
	used := map[string]bool{}
	ids := map[int]bool{}
	var walk func(ps []grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d twice", p.ID)
			}
			ids[p.ID] = true
			if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q does not use the datasource variable", p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				expr := grafanaVars.Replace(tg.Expr)
				if v := unknownVar.FindString(expr); v != "" {
					t.Errorf("panel %q: unknown variable %s in %s", p.Title, v, tg.Expr)
				}
				names, err := exprMetrics(expr)
				if err != nil {
					t.Errorf("panel %q, query %s: %s: %v", p.Title, tg.RefID, tg.Expr, err)
					continue
				}
				for _, n := range names {
					used[n] = true
					if !documented[n] {
						t.Errorf("panel %q uses %s, which docs/metrics.md does not list", p.Title, n)
					}
				}
			}
		}
	}
	walk(d.Panels)

	// What it must cover, by the metric that shows it.
	for topic, metric := range map[string]string{
		"ingest rate":      "vigil_ingest_requests_total",
		"ingest latency":   "vigil_ingest_upload_duration_seconds",
		"backlog depth":    "vigil_ingest_queue_depth",
		"RTSP backlog":     "vigil_recorder_spool_backlog",
		"storage errors":   "vigil_storage_operation_duration_seconds",
		"raft leader":      "vigil_meter_raft_state",
		"raft replication": "vigil_meter_applied_index",
		"retention":        "vigil_retention_deleted_objects_total",
		"purges":           "vigil_purge_jobs",
		"stuck purges":     "vigil_purge_stalled_seconds",
	} {
		if !used[metric] {
			t.Errorf("the dashboard does not show %s (%s)", topic, metric)
		}
	}
}

// The parser is the real one: a broken query fails.
func TestPromQLParserCatchesMistakes(t *testing.T) {
	for _, bad := range []string{
		`sum by (code) (rate(vigil_ingest_requests_total[5m])`,
		`histogram_quantile(0.99, sum by (le) rate(vigil_ingest_upload_duration_seconds_bucket[5m]))`,
		`rate(vigil_ingest_bytes_total)`,
		`nosuchfunction(vigil_ingest_bytes_total)`,
	} {
		if _, err := exprMetrics(bad); err == nil {
			t.Errorf("%s parsed", bad)
		}
	}
}
