// Package lb is the small load balancer of the local cluster (vigil
// cluster up): HTTP requests and RTSP connections go round robin to the
// ingest nodes that pass their health check. It stands in for the
// operator's real balancer; it does not retry a failed request, because a
// Bridge retries its upload itself.
package lb

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigilcloud/vigil/internal/httpx"
)

// Backend is one ingest node.
type Backend struct {
	HTTP string // host:port of its HTTP API
	RTSP string // host:port of its RTSP listener; empty when it has none

	proxy   *httputil.ReverseProxy
	healthy atomic.Bool
}

// Balancer spreads requests over backends.
type Balancer struct {
	backends []*Backend
	next     atomic.Uint64
	log      *slog.Logger
	health   *http.Client
}

// New returns a balancer over backends; all count as healthy until the
// first check says otherwise.
func New(backends []*Backend, log *slog.Logger) *Balancer {
	b := &Balancer{backends: backends, log: log, health: &http.Client{Timeout: time.Second}}
	for _, be := range backends {
		target := &url.URL{Scheme: "http", Host: be.HTTP}
		be.proxy = httputil.NewSingleHostReverseProxy(target)
		be.proxy.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return // the client went away
			}
			// Only a refused or timed-out dial says the node is gone: a
			// client's broken body must not take a healthy node out.
			if op := (*net.OpError)(nil); errors.As(err, &op) && op.Op == "dial" {
				be.healthy.Store(false)
			}
			log.Warn("lb: backend failed", "backend", be.HTTP, "err", err)
			httpx.WriteError(w, http.StatusBadGateway, "bad_gateway", "the ingest node failed; retry")
		}
		be.healthy.Store(true)
	}
	return b
}

// Check asks every backend's /readyz once and records the answers.
func (b *Balancer) Check(ctx context.Context) {
	var wg sync.WaitGroup
	for _, be := range b.backends {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+be.HTTP+"/readyz", nil)
			resp, err := b.health.Do(req)
			ok := err == nil && resp.StatusCode == http.StatusOK
			if err == nil {
				resp.Body.Close()
			}
			if was := be.healthy.Swap(ok); was != ok {
				b.log.Info("lb: backend health changed", "backend", be.HTTP, "healthy", ok)
			}
		})
	}
	wg.Wait()
}

// Run checks the backends every interval until ctx ends.
func (b *Balancer) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		b.Check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pick returns the next healthy backend that has addr(be) set, or nil.
func (b *Balancer) pick(addr func(*Backend) string) *Backend {
	n := len(b.backends)
	start := b.next.Add(1)
	for i := range n {
		be := b.backends[(int(start)+i)%n]
		if be.healthy.Load() && addr(be) != "" {
			return be
		}
	}
	return nil
}

// ServeHTTP proxies r to the next healthy backend.
func (b *Balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	be := b.pick(func(be *Backend) string { return be.HTTP })
	if be == nil {
		w.Header().Set("Retry-After", "1")
		httpx.WriteError(w, http.StatusServiceUnavailable, "no_backend", "no ingest node is ready")
		return
	}
	be.proxy.ServeHTTP(w, r)
}

// ServeRTSP accepts connections on l and pipes each to the next healthy
// backend's RTSP listener until l is closed. The backend enforces its own
// authentication deadline and session limits.
func (b *Balancer) ServeRTSP(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go b.pipe(c)
	}
}

func (b *Balancer) pipe(c net.Conn) {
	defer c.Close()
	be := b.pick(func(be *Backend) string { return be.RTSP })
	if be == nil {
		return
	}
	up, err := net.DialTimeout("tcp", be.RTSP, 5*time.Second)
	if err != nil {
		be.healthy.Store(false)
		b.log.Warn("lb: rtsp backend failed", "backend", be.RTSP, "err", err)
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done // either side ended: close both
}
