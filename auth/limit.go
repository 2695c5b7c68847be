package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Defaults of LimitConfig, which the --auth-failure-* flags take.
const (
	DefaultBurst  = 10              // failures per source address
	DefaultRefill = 6 * time.Second // ten a minute once the burst is spent
	// DefaultIdentityBurst is what an unset IdentityBurst comes to with
	// the default Burst (5 × Burst).
	DefaultIdentityBurst = 5 * DefaultBurst
)

// LimitConfig configures a Limiter. Zero fields take the defaults.
type LimitConfig struct {
	// Burst is how many failed authentications one source address may make
	// before it is refused (default DefaultBurst).
	Burst int
	// IdentityBurst is the same for one claimed identity from all sources
	// together (default 5 × Burst: one guessing source is stopped by its
	// own limit long before it could lock the identity's owner out).
	IdentityBurst int
	// Refill is the time in which one more failure is allowed again
	// (default DefaultRefill).
	Refill time.Duration
	// TrustTTL is how long a successful authentication exempts its
	// (identity, source) pair from the identity limit (default 24 h), so a
	// bridge keeps getting in from where it always does while others guess
	// its password from elsewhere.
	TrustTTL time.Duration
	// MaxKeys bounds each table (sources, identities, trusted pairs);
	// default 100,000.
	MaxKeys int
	// LogEvery and LogBurst sample the failure log lines: LogBurst lines
	// at once, then one per LogEvery (defaults 10 and 1 s). The metrics
	// count every failure.
	LogEvery   time.Duration
	LogBurst   int
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time // tests
}

// Limiter limits failed authentications per source address and per claimed
// identity (token bucket each, golang.org/x/time/rate). Callers ask Check
// before they look at credentials, so a refused guess learns nothing, and
// report the outcome with Fail or Succeed. A nil *Limiter limits nothing.
//
// HTTP bearer tokens claim no identity, so HTTP is limited per source; RTSP
// is limited per source and per user name. Sources are IPv4 addresses and
// IPv6 /64 prefixes (one host usually owns a whole /64).
type Limiter struct {
	cfg       LimitConfig
	log       *slog.Logger
	failures  *prometheus.CounterVec // proto, reason
	throttled *prometheus.CounterVec // proto, limit

	mu         sync.Mutex
	sources    map[netip.Addr]*rate.Limiter
	identities map[string]*rate.Limiter // keyed by identityKey: a user name may be a misplaced token
	trusted    map[trustKey]time.Time   // expiry
	logs       *rate.Limiter
	suppressed int
}

type trustKey struct {
	identity string
	source   netip.Addr
}

// NewLimiter returns a Limiter; its metrics are registered on cfg.Registerer.
func NewLimiter(cfg LimitConfig) *Limiter {
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.IdentityBurst <= 0 {
		cfg.IdentityBurst = 5 * cfg.Burst
	}
	if cfg.Refill <= 0 {
		cfg.Refill = DefaultRefill
	}
	if cfg.TrustTTL <= 0 {
		cfg.TrustTTL = 24 * time.Hour
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 100_000
	}
	if cfg.LogEvery <= 0 {
		cfg.LogEvery = time.Second
	}
	if cfg.LogBurst <= 0 {
		cfg.LogBurst = 10
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Limiter{
		cfg: cfg, log: cfg.Logger,
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_auth_failures_total", Help: "Failed authentications, by protocol and reason."},
			[]string{"proto", "reason"}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_auth_throttled_total", Help: "Authentications refused unchecked after too many failures, by protocol and the limit hit (source or identity)."},
			[]string{"proto", "limit"}),
		sources:    map[netip.Addr]*rate.Limiter{},
		identities: map[string]*rate.Limiter{},
		trusted:    map[trustKey]time.Time{},
		logs:       rate.NewLimiter(rate.Every(cfg.LogEvery), cfg.LogBurst),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(l.failures, l.throttled)
	}
	// Exported at 0 from the start, so an alert on their increase sees the first one.
	for _, pl := range [][2]string{{"http", "source"}, {"rtsp", "source"}, {"rtsp", "identity"}} {
		l.throttled.WithLabelValues(pl[0], pl[1])
	}
	return l
}

// Source returns the source key of a remote address ("ip:port" or a bare
// IP): the IPv4 address, or the IPv6 /64. The zero Addr when it does not parse.
func Source(remote string) netip.Addr {
	a, err := netip.ParseAddr(remote)
	if err != nil {
		host, _, serr := net.SplitHostPort(remote)
		if serr != nil {
			return netip.Addr{}
		}
		if a, err = netip.ParseAddr(host); err != nil {
			return netip.Addr{}
		}
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// identityKey hashes a claimed identity: a user who swapped name and
// password claims a token, which must not sit in memory in plain text.
func identityKey(identity string) string {
	if identity == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(identity))
	return hex.EncodeToString(sum[:16])
}

func (l *Limiter) limit() rate.Limit { return rate.Every(l.cfg.Refill) }

// wait is how long until b allows one more failure.
func (l *Limiter) wait(b *rate.Limiter, now time.Time) time.Duration {
	if b == nil {
		return 0
	}
	tokens := b.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) / float64(l.limit()) * float64(time.Second))
}

// Check reports whether an authentication attempt from src claiming
// identity (empty: none) may be checked at all. When not, retryAfter says
// when the next may, and the refusal is counted.
func (l *Limiter) Check(proto string, src netip.Addr, identity string) (retryAfter time.Duration, ok bool) {
	if l == nil {
		return 0, true
	}
	now := l.cfg.Now()
	id := identityKey(identity)
	l.mu.Lock()
	limit := "source"
	w := l.wait(l.sources[src], now)
	if id != "" {
		if exp, trusted := l.trusted[trustKey{id, src}]; !trusted || now.After(exp) {
			if iw := l.wait(l.identities[id], now); iw > w {
				w, limit = iw, "identity"
			}
		}
	}
	l.mu.Unlock()
	if w <= 0 {
		return 0, true
	}
	l.throttled.WithLabelValues(proto, limit).Inc()
	return w, false
}

// RetryAfterSeconds formats d for a Retry-After header: whole seconds, rounded up.
func RetryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// Fail records a failed authentication: it spends one from the source's
// and the identity's budget, counts it, and logs it when the log sample
// allows (attrs must carry no secret). ctx is for the log record.
func (l *Limiter) Fail(ctx context.Context, proto, reason string, src netip.Addr, identity string, attrs ...slog.Attr) {
	if l == nil {
		return
	}
	l.failures.WithLabelValues(proto, reason).Inc()
	now := l.cfg.Now()
	id := identityKey(identity)
	l.mu.Lock()
	// ReserveN always spends, also below zero: concurrent guesses that all
	// passed Check push the refusal further out instead of slipping through.
	bucket(l, l.sources, src, now, l.cfg.Burst).ReserveN(now, 1)
	if id != "" {
		bucket(l, l.identities, id, now, l.cfg.IdentityBurst).ReserveN(now, 1)
	}
	logIt := l.logs.AllowN(now, 1)
	suppressed := l.suppressed
	if logIt {
		l.suppressed = 0
	} else {
		l.suppressed++
	}
	l.mu.Unlock()
	if !logIt {
		return
	}
	all := append([]slog.Attr{slog.String("proto", proto), slog.String("source", src.String()), slog.String("reason", reason)}, attrs...)
	if suppressed > 0 {
		all = append(all, slog.Int("suppressed", suppressed))
	}
	l.log.LogAttrs(ctx, slog.LevelInfo, "auth: authentication failed", all...)
}

// Succeed records that src authenticated as identity: the pair is exempt
// from the identity limit for TrustTTL. It does not refill the source's
// budget (a valid token must not license guessing others).
func (l *Limiter) Succeed(src netip.Addr, identity string) {
	if l == nil || identity == "" {
		return
	}
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := trustKey{identityKey(identity), src}
	if _, ok := l.trusted[k]; !ok && len(l.trusted) >= l.cfg.MaxKeys {
		for tk, exp := range l.trusted {
			if now.After(exp) || len(l.trusted) >= l.cfg.MaxKeys {
				delete(l.trusted, tk)
			}
		}
	}
	l.trusted[k] = now.Add(l.cfg.TrustTTL)
}

// bucket returns (creating) the bucket of k in m; l.mu is held. A full
// table first forgets the keys whose buckets refilled (they hold nothing),
// then arbitrary ones.
func bucket[K comparable](l *Limiter, m map[K]*rate.Limiter, k K, now time.Time, burst int) *rate.Limiter {
	if b, ok := m[k]; ok {
		return b
	}
	if len(m) >= l.cfg.MaxKeys {
		for mk, b := range m {
			if b.TokensAt(now) >= float64(b.Burst()) || len(m) >= l.cfg.MaxKeys {
				delete(m, mk)
			}
		}
	}
	b := rate.NewLimiter(l.limit(), burst)
	m[k] = b
	return b
}
