package main

import (
	"flag"
	"io"
	"testing"
)

// TestServeRefusesRecordingsLongerThanUploads: the recorder's longest
// segment (2 × --segment-duration, at least 1 min, plus one step under
// --rtsp-max-timestamp-jump) must pass as an upload (10 min).
func TestServeRefusesRecordingsLongerThanUploads(t *testing.T) {
	for _, c := range []struct {
		args []string
		ok   bool
	}{
		{nil, true},
		{[]string{"--segment-duration", "4m", "--rtsp-max-timestamp-jump", "1m"}, true},
		{[]string{"--segment-duration", "5m"}, false},
		{[]string{"--rtsp-max-timestamp-jump", "10m"}, false},
		{[]string{"--rtsp-max-timestamp-jump", "0s"}, false},
	} {
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var cfg nodeConfig
		cfg.register(fs)
		if err := fs.Parse(append([]string{"--node-id", "n1"}, c.args...)); err != nil {
			t.Fatal(err)
		}
		if err := cfg.validate(); (err == nil) != c.ok {
			t.Errorf("%v: validate() = %v, want ok %v", c.args, err, c.ok)
		}
	}
}
