package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/vigilcloud/vigil/bench"
)

const meterUsage = `usage:
  vigil meter status  [--server URL]
  vigil meter billing YYYY-MM [--format json|csv] [--part summary|items] [-o FILE] [--server URL]
  vigil meter history STREAM [--server URL]
  vigil meter reconcile [--stream ID] [--dry-run] [--server URL]
The operator token comes from VIGIL_ADMIN_TOKEN or DATA/admin-token (--data).`

// meterSubcommands describe each `vigil meter` subcommand for its --help.
var meterSubcommands = map[string]struct{ synopsis, about string }{
	"status":    {"meter status [--server URL] [--data DIR]", "Prints the meter's raft and replication status as JSON."},
	"billing":   {"meter billing YYYY-MM [--format json|csv] [--part summary|items] [-o FILE] [--server URL] [--data DIR]", "Prints (or writes to -o) the month's billing run (docs/billing.md)."},
	"history":   {"meter history STREAM [--server URL] [--data DIR]", "Prints a stream's registration, usage and its history of changes and observed resolutions."},
	"reconcile": {"meter reconcile [--stream ID] [--dry-run] [--server URL] [--data DIR]", "Compares the meter's stored bytes with storage and fixes drift (docs/retention.md)."},
}

func runMeter(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%s", strings.TrimSpace(meterUsage))
	}
	sub, args := args[0], args[1:]
	if isHelp(sub) || sub == "help" {
		fmt.Fprintln(stdout, meterUsage)
		return flag.ErrHelp
	}
	desc, ok := meterSubcommands[sub]
	if !ok {
		return fmt.Errorf("%s", strings.TrimSpace(meterUsage))
	}
	fset := newFlagSet("meter "+sub, desc.synopsis, desc.about+"\nThe operator token comes from VIGIL_ADMIN_TOKEN or DATA/admin-token (--data).", stdout, stderr)
	server := fset.String("server", "http://127.0.0.1:8080", "a node's HTTP address")
	data := fset.String("data", "./vigil-data", "data directory of the node (for its admin token)")
	var format, part, out, stream *string
	var dryRun *bool
	switch sub {
	case "billing":
		format = fset.String("format", "json", "json or csv")
		part = fset.String("part", "", "summary or items (default: everything in JSON, items in CSV)")
		out = fset.String("o", "", "write the run to this file instead of stdout")
	case "reconcile":
		stream = fset.String("stream", "", "only this stream")                 // retention.go
		dryRun = fset.Bool("dry-run", false, "report drift without fixing it") // retention.go
	}
	// The positional argument may come before or after the flags.
	var pos []string
	for len(args) > 0 {
		if err := parseArgs(fset, args); err != nil {
			return err
		}
		args = fset.Args()
		if len(args) > 0 {
			pos = append(pos, args[0])
			args = args[1:]
		}
	}
	if err := fillFromEnv(fset); err != nil {
		return err
	}
	token := os.Getenv("VIGIL_ADMIN_TOKEN")
	if token == "" {
		b, err := os.ReadFile(filepath.Join(*data, "admin-token"))
		if err != nil {
			return fmt.Errorf("no VIGIL_ADMIN_TOKEN and %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	c := &apiClient{base: strings.TrimRight(*server, "/"), token: token}
	switch {
	case sub == "status" && len(pos) == 0:
		var st map[string]any
		if err := c.do(ctx, "GET", "/v1/meter/status", nil, &st); err != nil {
			return err
		}
		b, _ := json.MarshalIndent(st, "", "  ")
		fmt.Fprintln(stdout, string(b))
		return nil
	case sub == "billing" && len(pos) == 1:
		q := url.Values{"format": {*format}}
		if *part != "" {
			q.Set("part", *part)
		}
		body, err := c.raw(ctx, "/v1/billing/runs/"+url.PathEscape(pos[0])+"?"+q.Encode())
		if err != nil {
			return err
		}
		if *out == "" {
			_, err = stdout.Write(body)
			return err
		}
		if err := writeFileAtomic(*out, body); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "billing run %s written to %s (%d bytes)\n", pos[0], *out, len(body))
		return nil
	case sub == "reconcile" && len(pos) == 0:
		return meterReconcile(ctx, c, *stream, *dryRun, stdout) // retention.go
	case sub == "history" && len(pos) == 1:
		var rec struct {
			ID           string  `json:"id"`
			Account      string  `json:"account"`
			Camera       string  `json:"camera"`
			SKU          string  `json:"sku"`
			RegisteredAt string  `json:"registered_at"`
			DeletedAt    *string `json:"deleted_at"`
			StorageBytes int64   `json:"storage_bytes"`
			Segments     int64   `json:"segment_count"`
			ObservedTier string  `json:"observed_tier"`
			History      []struct {
				At            string   `json:"at"`
				Reason        string   `json:"reason"`
				Width         int      `json:"width"`
				Height        int      `json:"height"`
				RetentionDays int      `json:"retention_days"`
				Analytics     []string `json:"analytics"`
			} `json:"history"`
			Observed []struct {
				At     string `json:"at"`
				Width  int    `json:"width"`
				Height int    `json:"height"`
			} `json:"observed_history"`
		}
		if err := c.do(ctx, "GET", "/v1/meter/streams/"+url.PathEscape(pos[0]), nil, &rec); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "stream %s (camera %s, account %s): %s, registered %s", rec.ID, rec.Camera, rec.Account, rec.SKU, rec.RegisteredAt)
		if rec.DeletedAt != nil {
			fmt.Fprintf(stdout, ", deleted %s", *rec.DeletedAt)
		}
		fmt.Fprintf(stdout, "\nstorage %d bytes, %d segments ingested, observed tier %q\n", rec.StorageBytes, rec.Segments, rec.ObservedTier)
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "AT\tCHANGE\tRESOLUTION\tRETENTION\tANALYTICS")
		for _, h := range rec.History {
			fmt.Fprintf(tw, "%s\t%s\t%dx%d\tD%d\t%s\n", h.At, h.Reason, h.Width, h.Height, h.RetentionDays, strings.Join(h.Analytics, ","))
		}
		for _, o := range rec.Observed {
			fmt.Fprintf(tw, "%s\tobserved\t%dx%d\t\t\n", o.At, o.Width, o.Height)
		}
		return tw.Flush()
	}
	return fmt.Errorf("%s", strings.TrimSpace(meterUsage))
}

// raw GETs path and returns the body as is (CSV or JSON).
func (c *apiClient) raw(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// writeFileAtomic writes b to path through a temp file, fsync and rename.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".vigil-billing-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func runBenchMeter(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newBenchFlags("meter", "Usage updates/s on 3 raft voters, batched against the baseline of one update per\nApply; the billing run, snapshot and restore at 100,000 streams.", "a short run", "where the raft nodes keep data", stdout, stderr)
	_, dir, cleanup, err := f.parse(args)
	if err != nil {
		return err
	}
	defer cleanup()
	res, err := bench.RunMeter(ctx, bench.MeterConfig{WorkDir: dir, Quick: *f.quick, Log: newLogger(stderr, "info")})
	if err != nil {
		return err
	}
	printBench(stdout, "meter", res, *f.asJSON)
	return nil
}
