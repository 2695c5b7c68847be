package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/vigilcloud/vigil/ingest"
	"github.com/vigilcloud/vigil/internal/connlimit"
	"github.com/vigilcloud/vigil/internal/httpx"
)

// Timeouts the guard flags start from. The packages that apply them
// (net/http, storage.WithDeadline, index.WithDeadline) have no default of
// their own: zero there means no deadline, so the node's defaults are here.
const (
	defaultHeaderTimeout  = 10 * time.Second
	defaultIdleTimeout    = 60 * time.Second
	defaultStorageTimeout = 10 * time.Second
	defaultIndexTimeout   = 5 * time.Second
	defaultReadyTimeout   = 2 * time.Second
)

// guardFlags are the limits and timeouts that keep one slow, stalled or
// flooding client (or a frozen backend) from taking the node down for the
// others.
type guardFlags struct {
	HeaderTimeout   time.Duration
	IdleTimeout     time.Duration
	MaxConns        int
	MaxConnsPerIP   int
	BodyIdleTimeout time.Duration
	BodyMinRate     int64
	BridgeShare     float64
	StorageTimeout  time.Duration
	IndexTimeout    time.Duration
	ReadyTimeout    time.Duration
}

func (g *guardFlags) register(fs *flag.FlagSet) {
	ingestDef := ingest.DefaultConfig()
	fs.DurationVar(&g.HeaderTimeout, "http-header-timeout", defaultHeaderTimeout, "a connection must send its request headers within this")
	fs.DurationVar(&g.IdleTimeout, "http-idle-timeout", defaultIdleTimeout, "an idle keep-alive connection is closed after this")
	fs.IntVar(&g.MaxConns, "http-max-conns", 0, "open HTTP connections in total (0: three quarters of the open-file limit); over it the longest-idle connection is closed, or the new one")
	fs.IntVar(&g.MaxConnsPerIP, "http-max-conns-per-ip", connlimit.DefaultMaxConnsPerIP, "open HTTP connections from one source address; over it that source's longest-idle connection is closed, or the new one (0: no cap)")
	fs.DurationVar(&g.BodyIdleTimeout, "upload-idle-timeout", ingestDef.BodyIdleTimeout, "an upload whose body sends nothing for this long is answered 408 and gives its slot back")
	fs.Int64Var(&g.BodyMinRate, "upload-min-rate", ingestDef.BodyMinRate, "slowest accepted upload body, bytes/s: a body must arrive within --upload-idle-timeout + size/rate, else 408")
	fs.Float64Var(&g.BridgeShare, "bridge-share", ingestDef.BridgeShare, "largest fraction of the live and of the backlog upload slots one bridge may hold (at least one slot); 1 turns it off")
	fs.DurationVar(&g.StorageTimeout, "storage-timeout", defaultStorageTimeout, "a storage call that makes no progress for this long fails (uploads answer 503)")
	fs.DurationVar(&g.IndexTimeout, "index-timeout", defaultIndexTimeout, "an index call that does not answer within this fails (uploads answer 503)")
	fs.DurationVar(&g.ReadyTimeout, "readyz-timeout", defaultReadyTimeout, "each /readyz check (storage, index, meter) gets this long, all at once")
}

func (g *guardFlags) validate() error {
	if g.BodyMinRate <= 0 {
		return errors.New("--upload-min-rate must be positive")
	}
	if g.BridgeShare <= 0 {
		return errors.New("--bridge-share must be positive")
	}
	for name, d := range map[string]time.Duration{
		"--http-header-timeout": g.HeaderTimeout, "--upload-idle-timeout": g.BodyIdleTimeout,
		"--storage-timeout": g.StorageTimeout, "--index-timeout": g.IndexTimeout, "--readyz-timeout": g.ReadyTimeout,
	} {
		if d <= 0 {
			return fmt.Errorf("%s must be positive", name)
		}
	}
	return nil
}

// maxConns is --http-max-conns, or connlimit.DefaultMaxConns.
func (g *guardFlags) maxConns() int {
	if g.MaxConns > 0 {
		return g.MaxConns
	}
	return connlimit.DefaultMaxConns()
}

// ready answers 200 once storage, index and meter all answer. The checks
// run at once, each with its own deadline, so the answer names the
// component that hangs; a check that ignores its context is abandoned.
func (n *node) ready(w http.ResponseWriter, r *http.Request) {
	checks := map[string]func(context.Context) error{
		"storage": n.store.Ping,
		"index":   n.index.Ping,
		"meter":   n.rep.Ping,
	}
	var mu sync.Mutex
	res := map[string]string{}
	var wg sync.WaitGroup
	for name, ping := range checks {
		wg.Go(func() {
			err := pingWithin(r.Context(), n.readyWait, ping)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res[name] = err.Error()
			} else {
				res[name] = "ok"
			}
		})
	}
	wg.Wait()
	status := http.StatusOK
	for _, v := range res {
		if v != "ok" {
			status = http.StatusServiceUnavailable
		}
	}
	httpx.WriteJSON(w, status, res)
}

// pingWithin runs ping with a deadline of d and returns at the deadline
// even if ping does not.
func pingWithin(ctx context.Context, d time.Duration, ping func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ping(ctx) }()
	select {
	case err := <-done:
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("no answer within %s: %w", d, err)
		}
		return err
	case <-ctx.Done():
		return fmt.Errorf("no answer within %s", d)
	}
}
