// Command vigil is the cloud side of a video-surveillance service: one
// binary whose subcommands run a node (serve), a guided demo (demo), a
// simulated Bridge (bridge), the benchmarks (bench) and maintenance tools
// (index, meter).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

type command struct {
	name  string
	short string
	run   func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "run a node: ingest, playback and the meter", runServe},
		{"demo", "start a node, provision, simulate a bridge, print recordings", runDemo},
		{"bridge", "simulate a Bridge uploading segments (live, outage, backlog)", runBridge},
		{"bench", "run a benchmark: ingest, meter, retention, rtsp, playback, backlog, streams, all", runBench},
		{"index", "index maintenance: rebuild", runIndex},
		{"meter", "the meter: status, billing runs, stream history, reconcile", runMeter},
		{"cluster", "cluster up: a whole cluster on loopback (MinIO, Redis Cluster, meter, ingest, balancer)", runCluster},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) { // --help: usage is on stdout
			return
		}
		fmt.Fprintln(os.Stderr, "vigil:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return errors.New("no command given")
	}
	if isHelp(args[0]) || args[0] == "help" {
		usage(stdout)
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	usage(stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: vigil <command> [flags]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.short)
	}
	fmt.Fprintln(w, "\n`vigil <command> --help` describes a command and its flags. Every flag has a")
	fmt.Fprintln(w, "VIGIL_* environment twin: --http-addr is VIGIL_HTTP_ADDR.")
}

// parseFlags parses args, then fills every flag not given on the command
// line from its VIGIL_* environment twin.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	return fillFromEnv(fs)
}

// fillFromEnv sets every flag not given on the command line from its
// VIGIL_* environment twin.
func fillFromEnv(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := "VIGIL_" + envName(f.Name)
		if v, ok := os.LookupEnv(env); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
		}
	})
	return errors.Join(errs...)
}

// newFlagSet returns a subcommand's flag set. Its usage (synopsis, about,
// then the flags) goes to stdout when asked for with -h/--help, and to
// stderr after a parse error; parse with parseArgs or parseFlags.
func newFlagSet(name, synopsis, about string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(&usageOutput{stdout: stdout, stderr: stderr})
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: vigil %s\n", synopsis)
		if about != "" {
			fmt.Fprintf(w, "\n%s\n", about)
		}
		if hasFlags(fs) {
			fmt.Fprintln(w, "\nflags (each has a VIGIL_* environment twin: --http-addr is VIGIL_HTTP_ADDR):")
			fs.PrintDefaults()
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parseArgs parses args; the usage the flag package prints goes to stdout
// on --help (the caller returns flag.ErrHelp, and vigil exits 0) and to
// stderr otherwise.
func parseArgs(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if u, ok := fs.Output().(*usageOutput); ok {
		u.flush(errors.Is(err, flag.ErrHelp))
	}
	return err
}

// usageOutput holds what the flag package prints during Parse until it is
// known whether that was asked for.
type usageOutput struct {
	stdout, stderr io.Writer
	buf            strings.Builder
}

func (u *usageOutput) Write(p []byte) (int, error) { return u.buf.Write(p) }

func (u *usageOutput) flush(help bool) {
	w := u.stderr
	if help {
		w = u.stdout
	}
	io.WriteString(w, u.buf.String())
	u.buf.Reset()
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "--h":
		return true
	}
	return false
}

// envName is the environment twin of a flag, without the VIGIL_ prefix.
func envName(flag string) string { return strings.ToUpper(strings.ReplaceAll(flag, "-", "_")) }

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}
