package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vigilcloud/vigil/billing"
	"github.com/vigilcloud/vigil/internal/apiclient"

	"github.com/vigilcloud/vigil/bench"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fset := newFlagSet("demo", "demo [flags]", `The guided tour: starts a node in a temp dir (removed at the end unless --data
or --keep), provisions a reseller, an account, a bridge and cameras, simulates
the bridge through an outage whose backlog drains while live video continues,
and prints the recordings, the meter and the month's billing preview. Real
video payloads need ffmpeg (made once, cached under ~/.cache/vigil/payloads);
--payload synthetic needs nothing. The node flags are those of vigil serve.`, stdout, stderr)
	var cfg nodeConfig
	cfg.register(fset)
	// The demo picks its own data dir and ports: say so instead of serve's defaults.
	for name, usage := range map[string]string{
		"data":      "data directory (default: a temp dir, removed at the end)",
		"http-addr": "HTTP listen address (default: a free port on 127.0.0.1)",
		"raft-addr": "raft listen address (default: a free port on 127.0.0.1)",
		"rtsp-addr": "RTSP listen address (default: RTSP off; the demo's bridge uploads over HTTP)",
	} {
		f := fset.Lookup(name)
		f.DefValue, f.Usage = "", usage
		_ = f.Value.Set("")
	}
	var bf bridgeFlags
	bf.register(flag.NewFlagSet("", flag.ContinueOnError)) // defaults only
	fset.DurationVar(&bf.Live, "live", 12*time.Second, "how long the simulated bridge records live")
	fset.DurationVar(&bf.Outage, "outage", 20*time.Minute, "simulated outage whose backlog drains during live")
	fset.StringVar(&bf.Payload, "payload", "fmp4", "fmp4, ts or synthetic")
	keep := fset.Bool("keep", false, "keep serving after the demo until interrupted")
	if err := parseFlags(fset, args); err != nil {
		return err
	}
	if bf.Payload != bench.PayloadSynthetic {
		if _, err := exec.LookPath("ffmpeg"); err != nil {
			return fmt.Errorf("the demo makes real H.264 video with ffmpeg, which is not on PATH: install it (apt-get install ffmpeg), or run `vigil demo --payload synthetic` (placeholder payloads, no ffmpeg)")
		}
	}
	if !isFlagSet(fset, "data") {
		dir, err := os.MkdirTemp("", "vigil-demo-")
		if err != nil {
			return err
		}
		cfg.DataDir = dir
		if !*keep {
			// Runs after the node's Close (deferred below).
			defer func() {
				size := dirSize(dir)
				if err := os.RemoveAll(dir); err != nil {
					fmt.Fprintf(stdout, "the demo's data (%s) is left in %s: %v\n", humanBytes(size), dir, err)
					return
				}
				fmt.Fprintf(stdout, "removed the demo's data (%s in %s); --data DIR keeps it\n", humanBytes(size), dir)
			}()
		}
	}
	if !isFlagSet(fset, "http-addr") {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if !isFlagSet(fset, "raft-addr") {
		cfg.RaftAddr = "127.0.0.1:0"
	}
	if !isFlagSet(fset, "rtsp-addr") {
		cfg.RTSPAddr = "" // the demo's bridge uploads over HTTP
	}
	log := newLogger(stderr, "error")
	n, err := startNode(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer n.Close()
	base := "http://" + n.addr
	fmt.Fprintf(stdout, "1. node up at %s (data in %s, operator token in %s)\n", base, cfg.DataDir, n.tokenSource)

	c := &apiClient{base: base, token: n.adminToken}
	steps := []struct {
		method, path string
		body         any
	}{
		{"POST", "/v1/accounts", map[string]any{"id": "acme-reseller", "name": "ACME Security (reseller)",
			"defaults": map[string]any{"retention_days": 30}}},
		{"POST", "/v1/accounts", map[string]any{"id": "bakery", "name": "Corner Bakery", "parent": "acme-reseller",
			"billing_cycle": "monthly", "defaults": map[string]any{"width": 1920, "height": 1080, "retention_days": 7}}},
	}
	for _, s := range steps {
		if err := c.do(ctx, s.method, s.path, s.body, nil); err != nil {
			return err
		}
	}
	var br struct {
		Token string `json:"token"`
	}
	if err := c.do(ctx, "POST", "/v1/accounts/bakery/bridges", map[string]any{"id": "bakery-bridge", "name": "Back office"}, &br); err != nil {
		return err
	}
	cams := []map[string]any{
		{"id": "front-door", "name": "Front door", "streams": []map[string]any{
			{"id": "front-door-main", "width": 1920, "height": 1080, "retention_days": 30},
			{"id": "front-door-sub", "width": 640, "height": 480}}},
		{"id": "till", "name": "Till", "streams": []map[string]any{
			{"id": "till-main", "width": 1280, "height": 720, "analytics": []string{"people_counting"}}}},
	}
	for _, cam := range cams {
		if err := c.do(ctx, "POST", "/v1/bridges/bakery-bridge/cameras", cam, nil); err != nil {
			return err
		}
	}
	streams := []string{"front-door-main", "front-door-sub", "till-main"}
	fmt.Fprintln(stdout, "2. provisioned reseller acme-reseller, sub-account bakery, bridge bakery-bridge, cameras front-door (2 streams) and till")

	bf.Streams = "front-door-main,front-door-sub,till-main"
	bf.SegmentDuration = 2 * time.Second
	// The bridge's cameras send video of the size each stream is registered
	// with (a 1080p stream uploading 720p would be a tier mismatch).
	sizes := map[string][2]int{}
	for _, cam := range cams {
		for _, st := range cam["streams"].([]map[string]any) {
			sizes[st["id"].(string)] = [2]int{st["width"].(int), st["height"].(int)}
		}
	}
	bcfg, err := bf.config(ctx, sizes)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "3. simulating the bridge: a %v outage buffered locally, drained as backlog while %v of live video uploads\n", bf.Outage, bf.Live)
	up := &bench.Uploader{BaseURL: base, Token: br.Token, Log: log}
	if _, err := simulate(ctx, up, bcfg, stdout, log); err != nil {
		return err
	}

	fmt.Fprintln(stdout, "4. recordings")
	now := time.Now()
	for _, s := range streams {
		var rec struct {
			Spans    []struct{ Start, End int64 }
			Segments []json.RawMessage
		}
		path := fmt.Sprintf("/v1/streams/%s/recordings?start=%d&end=%d", s, now.Add(-2*time.Hour).UnixMilli(), now.Add(time.Minute).UnixMilli())
		if err := c.do(ctx, "GET", path, nil, &rec); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "   %-16s %4d segments in %d span(s):", s, len(rec.Segments), len(rec.Spans))
		for _, sp := range rec.Spans {
			fmt.Fprintf(stdout, " [%s – %s]", time.UnixMilli(sp.Start).UTC().Format(time.TimeOnly), time.UnixMilli(sp.End).UTC().Format(time.TimeOnly))
		}
		fmt.Fprintln(stdout)
	}
	fmt.Fprintln(stdout, "5. meter")
	for _, s := range streams {
		var m struct {
			SKU                     string
			Width, Height           int
			RetentionDays           int      `json:"retention_days"`
			Analytics               []string `json:"analytics"`
			ObservedWidth           int      `json:"observed_width"`
			ObservedHeight          int      `json:"observed_height"`
			ObservedAboveConfigured bool     `json:"observed_above_configured"`
		}
		if err := c.do(ctx, "GET", "/v1/meter/streams/"+s, nil, &m); err != nil {
			return err
		}
		observed := fmt.Sprintf("video received %dx%d", m.ObservedWidth, m.ObservedHeight)
		if m.ObservedAboveConfigured {
			observed += ", ABOVE the registered tier"
		}
		fmt.Fprintf(stdout, "   %-16s sku %s: registered %dx%d, retention %d days, analytics %s; %s\n",
			s, m.SKU, m.Width, m.Height, m.RetentionDays, listOrNone(m.Analytics), observed)
	}
	month := time.Now().UTC().Format("2006-01")
	var run billing.BillingRun
	if err := c.do(ctx, "GET", "/v1/billing/runs/"+month, nil, &run); err != nil {
		return err
	}
	kind := "preview, the month is not over"
	if run.Final {
		kind = "final"
	}
	fmt.Fprintf(stdout, "6. billing run %s (%s): %d streams, %d subscriptions\n", run.Month, kind, run.Summary.Streams, run.Summary.Subscriptions)
	for _, rr := range run.Resellers {
		for _, a := range rr.Accounts {
			fmt.Fprintf(stdout, "   %s / %s (billed %s): SKUs %s; analytics %s\n", rr.ID, a.ID, a.Cycle, counts(a.Summary.SKUs), counts(a.Summary.Analytics))
			for _, it := range a.Items {
				fmt.Fprintf(stdout, "     %-16s %-9s stored %s, ingested %s this month, %s byte-hours\n",
					it.Stream, it.SKU, humanBytes(it.StorageBytes), humanBytes(it.IngestedBytes), it.StoredByteHours)
			}
		}
	}
	if *keep {
		fmt.Fprintf(stdout, "serving on %s until interrupted\n", base)
		<-ctx.Done()
	}
	return nil
}

func isFlagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	if !set {
		_, set = os.LookupEnv("VIGIL_" + envName(name))
	}
	return set
}

// apiClient calls a node's JSON API.
type apiClient struct {
	base, token string
	http        http.Client
}

func (c *apiClient) do(ctx context.Context, method, path string, in, out any) error {
	return (&apiclient.Client{Base: c.base, Token: c.token, HTTP: c.http}).Do(ctx, method, path, in, out)
}

// dirSize is the total size of the regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// humanBytes renders n as a person reads it: 370 MB, 12 kB.
func humanBytes(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.0f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.0f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

// counts renders {"HD1-D7": 1, "SD1-D7": 2} as "HD1-D7 ×1, SD1-D7 ×2".
func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
