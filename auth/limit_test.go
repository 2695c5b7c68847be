package auth

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// fakeClock is a settable clock for the limiter.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestLimiter(cfg LimitConfig) (*Limiter, *fakeClock, *bytes.Buffer) {
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	var logs bytes.Buffer
	cfg.Now = clk.now
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	cfg.Registerer = prometheus.NewRegistry()
	return NewLimiter(cfg), clk, &logs
}

var (
	srcA = netip.MustParseAddr("192.0.2.1")
	srcB = netip.MustParseAddr("192.0.2.2")
)

func TestLimiterPerSource(t *testing.T) {
	l, clk, _ := newTestLimiter(LimitConfig{Burst: 3, Refill: 10 * time.Second})
	for i := range 3 {
		if _, ok := l.Check("http", srcA, ""); !ok {
			t.Fatalf("attempt %d refused within the burst", i)
		}
		l.Fail(context.Background(), "http", "unknown_token", srcA, "")
	}
	retry, ok := l.Check("http", srcA, "")
	if ok || retry <= 0 || retry > 10*time.Second {
		t.Fatalf("after the burst: ok=%v retry=%v, want refused for up to 10 s", ok, retry)
	}
	if _, ok := l.Check("http", srcB, ""); !ok {
		t.Fatal("another source is refused")
	}
	clk.add(retry)
	if _, ok := l.Check("http", srcA, ""); !ok {
		t.Fatal("still refused after Retry-After")
	}
	if got := counterValue(t, l.failures.WithLabelValues("http", "unknown_token")); got != 3 {
		t.Fatalf("failures metric %v, want 3", got)
	}
	if got := counterValue(t, l.throttled.WithLabelValues("http", "source")); got != 1 {
		t.Fatalf("throttled metric %v, want 1", got)
	}
}

// TestLimiterPerIdentity: many sources spending one identity's budget
// refuse a new source claiming it, but not the source that authenticated
// as it before; and a single guessing source cannot spend it.
func TestLimiterPerIdentity(t *testing.T) {
	l, _, _ := newTestLimiter(LimitConfig{Burst: 2, IdentityBurst: 4, Refill: time.Minute})
	home := netip.MustParseAddr("198.51.100.7")
	l.Succeed(home, "br1")
	for i := range 4 {
		src := netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})
		l.Fail(context.Background(), "rtsp", "wrong_credentials", src, "br1")
	}
	if _, ok := l.Check("rtsp", netip.MustParseAddr("203.0.113.99"), "br1"); ok {
		t.Fatal("a new source claiming an identity whose budget is spent is let through")
	}
	if _, ok := l.Check("rtsp", home, "br1"); !ok {
		t.Fatal("the identity's usual source is refused")
	}
	if _, ok := l.Check("rtsp", netip.MustParseAddr("203.0.113.99"), "br2"); !ok {
		t.Fatal("another identity is refused")
	}
	if got := counterValue(t, l.throttled.WithLabelValues("rtsp", "identity")); got != 1 {
		t.Fatalf("throttled{identity} = %v", got)
	}

	// Default: the identity budget is 5 × the source's.
	l2, _, _ := newTestLimiter(LimitConfig{Burst: 3})
	for range 3 {
		l2.Fail(context.Background(), "rtsp", "wrong_credentials", srcA, "br1")
	}
	if _, ok := l2.Check("rtsp", srcB, "br1"); !ok {
		t.Fatal("one guessing source spent the identity's budget")
	}
}

func TestLimiterSamplesLogsAndKeepsNoSecret(t *testing.T) {
	l, clk, logs := newTestLimiter(LimitConfig{Burst: 1000, LogBurst: 3, LogEvery: time.Second})
	secret := "a-token-typed-as-the-user-name"
	for range 100 {
		l.Fail(context.Background(), "rtsp", "wrong_credentials", srcA, secret)
	}
	if got := strings.Count(logs.String(), "authentication failed"); got != 3 {
		t.Fatalf("100 failures at once logged %d lines, want 3", got)
	}
	clk.add(time.Second)
	l.Fail(context.Background(), "rtsp", "wrong_credentials", srcA, secret)
	if !strings.Contains(logs.String(), "suppressed=97") {
		t.Fatalf("the next line does not count the suppressed ones:\n%s", logs)
	}
	if strings.Contains(logs.String(), secret) {
		t.Fatal("the claimed identity is logged")
	}
	for k := range l.identities {
		if strings.Contains(k, secret) {
			t.Fatal("the claimed identity is kept in plain text")
		}
	}
}

func TestLimiterBoundsItsTables(t *testing.T) {
	l, _, _ := newTestLimiter(LimitConfig{Burst: 2, MaxKeys: 50})
	for i := range 500 {
		src := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		l.Fail(context.Background(), "http", "unknown_token", src, strconv.Itoa(i))
		l.Succeed(src, strconv.Itoa(i))
	}
	if len(l.sources) > 50 || len(l.identities) > 50 || len(l.trusted) > 50 {
		t.Fatalf("tables grew to %d sources, %d identities, %d trusted; bound 50", len(l.sources), len(l.identities), len(l.trusted))
	}
}

func TestSource(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:4242":                "192.0.2.1",
		"[::ffff:192.0.2.1]:1":          "192.0.2.1",
		"[2001:db8:1:2:3:4:5:6]:443":    "2001:db8:1:2::",
		"[2001:db8:1:2:ffff::1%eth0]:1": "2001:db8:1:2::",
		"garbage":                       "invalid IP",
	} {
		if got := Source(in).String(); got != want {
			t.Errorf("Source(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestMiddlewareLimitsFailures: after Burst wrong tokens from one address
// the middleware answers 429 with Retry-After and does not look at the
// token (a right one is refused too); other addresses are unaffected; a
// handler's ReportFailure (bad URL signature) counts.
func TestMiddlewareLimitsFailures(t *testing.T) {
	bridgeTok := NewToken()
	a := New("admin-secret", fakeBridges{HashToken(bridgeTok): "br1"})
	l, _, _ := newTestLimiter(LimitConfig{Burst: 3, Refill: time.Minute})
	a.LimitFailures(l)
	h := a.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if FromContext(r.Context()).Kind == Anonymous {
			ReportFailure(r.Context(), "bad_signature")
			w.WriteHeader(http.StatusForbidden)
		}
	}), func(r *http.Request) bool { return r.URL.Path == "/signed" })
	do := func(remote, path, token string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		req.RemoteAddr = remote
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	for i := range 10 {
		if w := do("192.0.2.1:1000", "/x", ""); w.Code != 401 {
			t.Fatalf("request %d without a token: %d (no guess, never limited)", i, w.Code)
		}
	}
	for i := range 2 {
		if w := do("192.0.2.1:1000", "/x", "guess"+strconv.Itoa(i)); w.Code != 401 {
			t.Fatalf("guess %d: %d", i, w.Code)
		}
	}
	if w := do("192.0.2.1:1001", "/signed", ""); w.Code != 403 {
		t.Fatalf("bad signature: %d", w.Code)
	}
	w := do("192.0.2.1:1002", "/x", bridgeTok)
	if w.Code != 429 || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), `"code":"too_many_auth_failures"`) {
		t.Fatalf("right token from the refused address: %d %q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if w := do("192.0.2.1:1003", "/signed", ""); w.Code != 429 {
		t.Fatalf("signed URL from the refused address: %d", w.Code)
	}
	if w := do("192.0.2.2:1000", "/x", bridgeTok); w.Code != 200 {
		t.Fatalf("right token from another address: %d", w.Code)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
