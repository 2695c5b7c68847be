package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/vigilcloud/vigil/bench"
)

// benchUsage lists the benchmarks; each one's --help gives its flags.
const benchUsage = `usage: vigil bench <benchmark> [--quick] [--json] [--work-dir DIR] [flags]

  ingest     HTTP segment uploads into vigil on MinIO vs direct PUTs to MinIO
  meter      usage updates/s batched vs one per raft Apply; billing run; snapshot/restore
  retention  sweeper delete rate vs minio-go RemoveObjects; purge time; idle sweep cost
  rtsp       N RTSP publishers into vigil serve vs a packet-counting RTSP server
  playback   recordings-list latency, segment and clip.mp4 TTFB vs per-segment fetches
  live       LL-HLS glass-to-playlist latency at N live RTSP streams vs one stream
  backlog    live upload latency while a fifth of 200 Bridges drains a 48-hour backlog
  streams    segments/s, p99 and RSS of 10,000 low-bitrate streams through one node
  all        every benchmark in turn, then one summary table (--quick: under 10 minutes)

` + "`vigil bench <benchmark> --help` lists its flags. Results and goals: bench/RESULTS.md."

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, benchUsage)
		return errors.New("bench: name a benchmark")
	}
	if isHelp(args[0]) || args[0] == "help" {
		fmt.Fprintln(stdout, benchUsage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "ingest":
		return runBenchIngest(ctx, args[1:], stdout, stderr)
	case "meter":
		return runBenchMeter(ctx, args[1:], stdout, stderr) // meter.go
	case "retention":
		return runBenchRetention(ctx, args[1:], stdout, stderr) // retention.go
	case "rtsp":
		return runBenchRTSP(ctx, args[1:], stdout, stderr) // benchrtsp.go
	case "playback":
		return runBenchPlayback(ctx, args[1:], stdout, stderr)
	case "live":
		return runBenchLive(ctx, args[1:], stdout, stderr) // benchlive.go
	case "backlog":
		return runBenchBacklog(ctx, args[1:], stdout, stderr) // benchstorm.go
	case "all":
		return runBenchAll(ctx, args[1:], stdout, stderr) // benchall.go
	case "streams":
		return runBenchStreams(ctx, args[1:], stdout, stderr) // benchstorm.go
	case "rtsp-sink": // hidden: the baseline process of bench rtsp
		return runBenchRTSPSink(ctx, args[1:], stderr)
	default:
		fmt.Fprintln(stderr, benchUsage)
		return fmt.Errorf("bench %q: no such benchmark (ingest, meter, retention, rtsp, playback, live, backlog, streams, all)", args[0])
	}
}

func runBenchIngest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newBenchFlags("ingest", "HTTP segment uploads through vigil (MinIO storage, Redis index) against the baseline of\nthe same bodies PUT straight to MinIO, per size and concurrency. Needs minio and\nredis-server (see --minio).", "a short run (a couple of minutes)", "where MinIO and the nodes keep data", stdout, stderr)
	runs := f.fs.Int("runs", 3, "repetitions of every case; medians are reported")
	sizes := f.fs.String("sizes", "256KiB,1MiB,4MiB", "segment sizes")
	concs := f.fs.String("concurrency", "16,64", "concurrent uploads")
	minioBin := f.fs.String("minio", "", "the minio binary (default: minio on PATH, else the one scripts/test.sh built under ~/.cache/vigil-tools)")
	drives := minioDrivesFlag(f)
	self, dir, cleanup, err := f.parse(args)
	if err != nil {
		return err
	}
	defer cleanup()
	cfg := bench.IngestConfig{
		VigilBin: self, WorkDir: dir, MinIOBin: *minioBin, MinIODrives: *drives,
		BytesPerRun: 512 << 20,
		Runs:        *runs,
		Log:         newLogger(stderr, "info"),
	}
	if cfg.Sizes, err = parseList(*sizes, parseSize); err != nil {
		return fmt.Errorf("--sizes: %w", err)
	}
	if cfg.Concurrency, err = parseList(*concs, strconv.Atoi); err != nil {
		return fmt.Errorf("--concurrency: %w", err)
	}
	if *f.quick {
		cfg.BytesPerRun = 96 << 20
		cfg.Runs = 1
	}
	res, err := bench.RunIngest(ctx, cfg)
	if err != nil {
		return err
	}
	printBench(stdout, "ingest", res, *f.asJSON)
	return nil
}

func parseList(s string, parse func(string) (int, error)) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := parse(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		if v <= 0 {
			return nil, fmt.Errorf("%q must be positive", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// parseSize reads 256KiB, 4MiB or plain bytes.
func parseSize(s string) (int, error) {
	mult := 1
	switch {
	case strings.HasSuffix(s, "KiB"):
		mult, s = 1<<10, strings.TrimSuffix(s, "KiB")
	case strings.HasSuffix(s, "MiB"):
		mult, s = 1<<20, strings.TrimSuffix(s, "MiB")
	}
	n, err := strconv.Atoi(s)
	return n * mult, err
}

// benchFlags are the flags every bench subcommand has; a subcommand adds
// its own to fs before parse.
type benchFlags struct {
	fs     *flag.FlagSet
	quick  *bool
	asJSON *bool
	work   *string
}

func newBenchFlags(name, about, quickUsage, workUsage string, stdout, stderr io.Writer) *benchFlags {
	fs := newFlagSet("bench "+name, "bench "+name+" [flags]", about, stdout, stderr)
	return &benchFlags{fs: fs,
		quick:  fs.Bool("quick", false, quickUsage),
		asJSON: fs.Bool("json", false, "print the results as one JSON object on the last line"),
		work:   fs.String("work-dir", "", workUsage+" (default: a temp dir, removed after)")}
}

// parse parses args and returns the vigil binary running the benchmark and
// its work directory: --work-dir, or a temp dir that cleanup removes.
func (b *benchFlags) parse(args []string) (self, dir string, cleanup func(), err error) {
	if err := parseFlags(b.fs, args); err != nil {
		return "", "", nil, err
	}
	return benchSetup(*b.work)
}

// benchSetup returns the vigil binary running the benchmark and its work
// directory: work, or a temp dir that cleanup removes.
func benchSetup(work string) (self, dir string, cleanup func(), err error) {
	if self, err = os.Executable(); err != nil {
		return "", "", nil, err
	}
	if work != "" {
		return self, work, func() {}, nil
	}
	if dir, err = os.MkdirTemp("", "vigil-bench-"); err != nil {
		return "", "", nil, err
	}
	return self, dir, func() { os.RemoveAll(dir) }, nil
}

// benchBaselines names what each benchmark's "baseline" column measured.
var benchBaselines = map[string]string{
	"ingest":    "the same bodies PUT straight to MinIO with minio-go (S3 cases) and raw temp-file+fsync+rename writes (fs cases), same run, same machine",
	"meter":     "one usage update per raft Apply on the same 3 voters",
	"retention": "minio-go RemoveObjects on the same layout in the same MinIO",
	"rtsp":      "a packet-counting RTSP server (bench rtsp-sink: same RTSP stack, no recording) with the same publishers",
	"playback":  "the same segments fetched one by one over HTTP",
	"live":      "the same node and player with --baseline live streams (default 1), same run",
	"backlog":   "the same fleet live without a drain (calm phase), same run, same node",
	"streams":   "the same bodies PUT straight to the same MinIO with minio-go, same concurrency",
}

// printBench prints what the run compares with, one line per metric, one
// line per goal (met or not, and by how much) and, with asJSON, the
// contract's JSON object as the last line.
func printBench(w io.Writer, name string, res []bench.Metric, asJSON bool) {
	fmt.Fprintf(w, "bench %s — baseline: %s\n", name, benchBaselines[name])
	for _, m := range res {
		line := fmt.Sprintf("%-44s %12.2f %-12s", m.Metric, m.Value, m.Unit)
		if m.Baseline != 0 {
			line += fmt.Sprintf(" baseline %10.2f", m.Baseline)
		}
		if m.Ratio != 0 {
			line += fmt.Sprintf("  ratio %.2f", m.Ratio)
		}
		if m.Met != nil {
			line += fmt.Sprintf("  goal %s met=%v", m.Goal, *m.Met)
		}
		fmt.Fprintln(w, line)
	}
	for _, m := range res {
		if m.Met != nil {
			fmt.Fprintln(w, goalLine(m))
		}
	}
	if asJSON {
		b, _ := json.Marshal(map[string]any{"bench": name, "results": res})
		fmt.Fprintln(w, string(b))
	}
}

// runBenchPlayback is `vigil bench playback`: recordings-list latency,
// segment and clip.mp4 time to first byte and throughput on a seeded stream.
func runBenchPlayback(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newBenchFlags("playback", "Recordings-list latency over 1 h and --list-days, segment time to first byte, and\nclip.mp4 over one hour against the baseline of the same segments fetched one by one.", "a short run: one uploaded hour, once", "where the node keeps data", stdout, stderr)
	runs := f.fs.Int("runs", 3, "repetitions of every measurement; medians are reported")
	hours := f.fs.Int("hours", 3, "hours of real 6-s 2 Mbit/s segments uploaded over HTTP")
	days := f.fs.Int("list-days", 30, "length of the long recordings window (earlier days seeded as hour manifests)")
	history := f.fs.String("history-days", "1,30,90,365", "stored history lengths (days, comma-separated; empty: none) at which the timeline and a day's page are timed against the 1-h list, a fresh node each")
	historyOnly := f.fs.Bool("history-only", false, "time only the history lengths (no uploads, segments or clips)")
	nodeBin := f.fs.String("node-bin", "", "vigil binary that runs the node under test (default: this one), e.g. an older build for an A/B")
	self, dir, cleanup, err := f.parse(args)
	if err != nil {
		return err
	}
	defer cleanup()
	histDays, err := parseDays(*history)
	if err != nil {
		return err
	}
	if *nodeBin != "" {
		self = *nodeBin
	}
	log := newLogger(stderr, "info")
	cfg := bench.PlaybackConfig{VigilBin: self, WorkDir: dir, Hours: *hours, ListDays: *days, Runs: *runs, Log: log}
	if *f.quick {
		cfg.Hours, cfg.Runs = 1, 1
	}
	if cfg.Hours < 1 || cfg.ListDays < 1 || cfg.ListDays*24 < cfg.Hours {
		return errors.New("bench playback: --hours must be at least 1 and within --list-days")
	}
	var res []bench.Metric
	if !*historyOnly {
		if res, err = bench.RunPlayback(ctx, cfg); err != nil {
			return err
		}
	}
	if len(histDays) > 0 {
		hres, err := bench.RunPlaybackHistory(ctx, bench.HistoryConfig{VigilBin: self, WorkDir: dir, Days: histDays, Runs: cfg.Runs, Log: log})
		if err != nil {
			return err
		}
		res = append(res, hres...)
	}
	printBench(stdout, "playback", res, *f.asJSON)
	return nil
}

// parseDays parses --history-days: positive day counts up to 3650,
// comma-separated.
func parseDays(s string) ([]int, error) {
	var days []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		d, err := strconv.Atoi(f)
		if err != nil || d < 1 || d > 3650 {
			return nil, fmt.Errorf("bench playback: --history-days: %q is not a number of days (1..3650)", f)
		}
		days = append(days, d)
	}
	return days, nil
}

// goalLine says whether m met its goal and by how much: the goal's bound
// (">= 2.0x", "< 200", "<= 1.5x", "0") is compared with the ratio when it
// ends in x, else with the value.
func goalLine(m bench.Metric) string {
	verdict := "NOT MET"
	if *m.Met {
		verdict = "met"
	}
	line := fmt.Sprintf("goal %-36s %s: %s", m.Metric, m.Goal, verdict)
	op, bound, ratio, ok := parseGoal(m.Goal)
	if !ok {
		return line + fmt.Sprintf(" (%.2f %s)", m.Value, m.Unit)
	}
	got, unit := m.Value, " "+m.Unit
	if ratio {
		got, unit = m.Ratio, "x"
	}
	switch {
	case bound == 0:
		return line + fmt.Sprintf(" (%.2f%s)", got, unit)
	case op == ">" || op == ">=":
		return line + fmt.Sprintf(" (%.2f%s, %+.0f%% against the bound %.2f%s)", got, unit, (got/bound-1)*100, bound, unit)
	default: // < or <=: positive headroom is good
		return line + fmt.Sprintf(" (%.2f%s, %.0f%% %s the bound %.2f%s)", got, unit, math.Abs(1-got/bound)*100, map[bool]string{true: "under", false: "over"}[got <= bound], bound, unit)
	}
}

// parseGoal reads a goal's leading comparison: "≥ 100000 updates/s …"
// gives (">=", 100000, false).
func parseGoal(goal string) (op string, bound float64, ratio, ok bool) {
	g := strings.NewReplacer("≥", ">=", "≤", "<=").Replace(strings.TrimSpace(goal))
	for _, o := range []string{">=", "<=", ">", "<", ""} {
		if strings.HasPrefix(g, o) {
			op, g = o, strings.TrimSpace(g[len(o):])
			break
		}
	}
	end := 0
	for end < len(g) && (g[end] == '.' || g[end] >= '0' && g[end] <= '9') {
		end++
	}
	v, err := strconv.ParseFloat(g[:end], 64)
	if err != nil {
		return "", 0, false, false
	}
	if op == "" {
		op = "<=" // "0": at most
	}
	return op, v, strings.HasPrefix(g[end:], "x"), true
}
