package testutil

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Gauges gathers g into a map from name{label value,…} (label values in
// label-name order; the bare name without labels) to each gauge's value.
func Gauges(t testing.TB, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetValue() + "}"
			}
			out[name] = m.GetGauge().GetValue()
		}
	}
	return out
}
