// Package connlimit caps the connections an HTTP server holds, in total and
// per source address, so that a client opening (and idling on) thousands of
// connections cannot exhaust the process's file descriptors and lock out
// health checks and Bridges.
package connlimit

import (
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMaxConnsPerIP is the per-source cap the --http-max-conns-per-ip
// flag starts from: far above what a Bridge or a browser opens, far below
// what exhausts descriptors.
const DefaultMaxConnsPerIP = 256

// DefaultMaxConns is the total cap when none is set: three quarters of the
// open-file limit (Go raises the soft limit to the hard one at start),
// which leaves descriptors for storage, Redis, raft and RTSP.
func DefaultMaxConns() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 1 << 20
	}
	return max(64, int(rl.Cur/4*3))
}

// Config sets the caps. Zero or negative means no cap.
type Config struct {
	MaxConns      int // in total
	MaxConnsPerIP int // from one source address
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
}

// Listener wraps a net.Listener. A connection over a cap first makes room
// by closing the longest-waiting connection that is not serving a request
// (idle keep-alive, or not yet sent a request) of the same source, for the
// per-source cap, or of any source, for the total cap; when there is none
// the new connection is closed at once (with RST, freeing its descriptor
// now). Install ConnState as the http.Server's ConnState hook, so the
// listener knows which connections are idle.
type Listener struct {
	net.Listener
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	total int
	perIP map[netip.Addr]int
	// waiting holds the connections not serving a request, since when.
	waiting map[*conn]time.Time

	open     prometheus.Gauge
	rejected *prometheus.CounterVec
	evicted  *prometheus.CounterVec
}

// New wraps l.
func New(l net.Listener, cfg Config) *Listener {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cl := &Listener{
		Listener: l, cfg: cfg, log: log,
		perIP:   map[netip.Addr]int{},
		waiting: map[*conn]time.Time{},
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_http_connections",
			Help: "Open HTTP connections.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_http_connections_rejected_total",
			Help: "HTTP connections closed at accept because a cap was reached, by cap (per_source, total).",
		}, []string{"cap"}),
		evicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_http_connections_evicted_total",
			Help: "Idle HTTP connections closed to make room for a new one, by cap (per_source, total).",
		}, []string{"cap"}),
	}
	for _, c := range []string{capPerSource, capTotal} {
		cl.rejected.WithLabelValues(c)
		cl.evicted.WithLabelValues(c)
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(cl.open, cl.rejected, cl.evicted)
	}
	return cl
}

const (
	capPerSource = "per_source"
	capTotal     = "total"
)

// Accept returns the next connection within the caps.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := sourceOf(c)
		if wc, ok := l.admit(c, ip); ok {
			return wc, nil
		}
	}
}

func sourceOf(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// admit counts c in, making room first if a cap is reached.
func (l *Listener) admit(c net.Conn, ip netip.Addr) (net.Conn, bool) {
	l.mu.Lock()
	var victims []*conn
	reject := ""
	if max := l.cfg.MaxConnsPerIP; max > 0 && l.perIP[ip] >= max {
		if v := l.oldestWaiting(func(w *conn) bool { return w.ip == ip }); v != nil {
			victims = append(victims, v)
			l.evicted.WithLabelValues(capPerSource).Inc()
		} else {
			reject = capPerSource
		}
	}
	if reject == "" && len(victims) == 0 && l.cfg.MaxConns > 0 && l.total >= l.cfg.MaxConns {
		if v := l.oldestWaiting(nil); v != nil {
			victims = append(victims, v)
			l.evicted.WithLabelValues(capTotal).Inc()
		} else {
			reject = capTotal
		}
	}
	if reject != "" {
		l.mu.Unlock()
		l.rejected.WithLabelValues(reject).Inc()
		l.log.Debug("http: connection over cap closed", "source", ip, "cap", reject)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
		return nil, false
	}
	// A victim's slot is handed to c now; its Close finds it already gone.
	for _, v := range victims {
		l.release(v)
	}
	wc := &conn{Conn: c, l: l, ip: ip}
	l.total++
	l.perIP[ip]++
	l.waiting[wc] = time.Now()
	l.open.Inc()
	l.mu.Unlock()
	for _, v := range victims {
		l.log.Debug("http: idle connection closed to make room", "source", v.ip)
		_ = v.Conn.Close()
	}
	return wc, true
}

// oldestWaiting returns the connection that waits longest among those
// matching keep (nil: all). Called with mu held; linear, but only when a
// cap is reached.
func (l *Listener) oldestWaiting(keep func(*conn) bool) *conn {
	var best *conn
	var since time.Time
	for c, t := range l.waiting {
		if keep != nil && !keep(c) {
			continue
		}
		if best == nil || t.Before(since) {
			best, since = c, t
		}
	}
	return best
}

// release uncounts c once. Called with mu held.
func (l *Listener) release(c *conn) {
	if c.released {
		return
	}
	c.released = true
	delete(l.waiting, c)
	l.total--
	if l.perIP[c.ip]--; l.perIP[c.ip] <= 0 {
		delete(l.perIP, c.ip)
	}
	l.open.Dec()
}

// ConnState is the http.Server hook that tells the listener which
// connections are serving a request.
func (l *Listener) ConnState(nc net.Conn, st http.ConnState) {
	c, ok := nc.(*conn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.released {
		return
	}
	switch st {
	case http.StateIdle:
		l.waiting[c] = time.Now()
	case http.StateActive:
		delete(l.waiting, c)
	case http.StateHijacked, http.StateClosed:
		l.release(c)
	}
}

// conn is a counted connection.
type conn struct {
	net.Conn
	l        *Listener
	ip       netip.Addr
	released bool // guarded by l.mu
	once     sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.release(c)
		c.l.mu.Unlock()
	})
	return err
}
