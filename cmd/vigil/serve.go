package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/vigilcloud/vigil/access"
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/billing"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/entitlement"
	"github.com/vigilcloud/vigil/health"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/embedded"
	"github.com/vigilcloud/vigil/index/redisindex"
	"github.com/vigilcloud/vigil/ingest"
	"github.com/vigilcloud/vigil/ingest/rtsp"
	"github.com/vigilcloud/vigil/ingest/segmenter"
	"github.com/vigilcloud/vigil/internal/connlimit"
	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/live"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/playback"
	"github.com/vigilcloud/vigil/purge"
	"github.com/vigilcloud/vigil/replica"
	"github.com/vigilcloud/vigil/storage"
	"github.com/vigilcloud/vigil/storage/fs"
	"github.com/vigilcloud/vigil/storage/s3"
	"github.com/vigilcloud/vigil/ui"
)

// nodeConfig is everything `vigil serve` is configured with.
type nodeConfig struct {
	DataDir         string
	HTTPAddr        string
	RTSPAddr        string
	RTSPUDPAddr     string
	RTSPMaxSessions int
	RaftAddr        string
	RaftAdvertise   string
	HTTPAdvertise   string
	NodeID          string
	Roles           string
	Join            string
	SegmentDuration time.Duration
	MaxRTPJump      time.Duration

	S3Endpoint   string
	S3Bucket     string
	S3AccessKey  string
	S3SecretKey  string
	S3Region     string
	RedisAddr    string
	RedisCluster bool
	IndexCache   int64 // MiB of decoded hour manifests kept

	MaxSegmentBytes    int64
	LiveThreshold      time.Duration
	LiveConcurrency    int
	BacklogConcurrency int
	BacklogQueue       int
	BacklogYield       float64
	CompactInterval    time.Duration
	CompactGrace       time.Duration
	LogLevel           string
	DebugAddr          string
	Retention          retentionFlags // retention.go
	Guard              guardFlags     // guard.go
	Health             healthFlags    // health.go
	Live               liveFlags      // live.go
	SMTP               smtpFlags      // smtp.go

	// Before authentication (RTSP) and after failed ones (HTTP and RTSP).
	RTSPMaxUnauth      int
	RTSPMaxUnauthPerIP int
	RTSPAuthTimeout    time.Duration
	AuthFailureBurst   int
	AuthIdentityBurst  int
	AuthFailureRefill  time.Duration

	UsageResolveMax int // unsure Puts checked against storage per usage tick
	SKUPrefix       string
}

func (c *nodeConfig) register(fs *flag.FlagSet) {
	ingestDef := ingest.DefaultConfig()
	fs.StringVar(&c.DataDir, "data", "./vigil-data", "data directory (meter raft log, fs objects, admin token)")
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address")
	fs.StringVar(&c.RTSPAddr, "rtsp-addr", "127.0.0.1:8554", "RTSP listen address for publishing Bridges; empty disables RTSP")
	fs.StringVar(&c.RTSPUDPAddr, "rtsp-udp-addr", "", "UDP RTP listen address of the RTSP UDP transport (even port; RTCP on the next); default 2×RTSP port−9108 (8000 for 8554) on the RTSP host, a free pair if that is out of range; off disables UDP")
	fs.IntVar(&c.RTSPMaxSessions, "rtsp-max-sessions", 1000, "concurrent authenticated RTSP sessions; a further ANNOUNCE is answered 503")
	fs.StringVar(&c.RaftAddr, "raft-addr", "127.0.0.1:8300", "raft listen address of the meter")
	fs.StringVar(&c.RaftAdvertise, "raft-advertise", "", "raft address other nodes dial when it is not --raft-addr (a bind on 0.0.0.0, a NAT, a Kubernetes per-pod Service); a host name is resolved once at start")
	fs.StringVar(&c.HTTPAdvertise, "http-advertise", "", "HTTP address other nodes forward writes to when it is not the listen address (a bind on 0.0.0.0, a NAT); a host name is resolved at every forward")
	fs.StringVar(&c.NodeID, "node-id", "", "node id (default: the host name)")
	fs.StringVar(&c.Roles, "roles", "ingest,meter", "roles of this node")
	fs.StringVar(&c.Join, "join", "", "HTTP address of any cluster member to join (ignored once the node has raft state)")
	fs.DurationVar(&c.SegmentDuration, "segment-duration", segmenter.DefaultSegmentDuration, "RTSP segment duration")
	fs.DurationVar(&c.MaxRTPJump, "rtsp-max-timestamp-jump", segmenter.DefaultMaxTimestampJump, "an RTP timestamp step beyond this (forward or back) is a jump: the RTSP segment is cut and its clock re-anchored; above the longest frame interval")
	fs.StringVar(&c.S3Endpoint, "s3-endpoint", "", "S3 endpoint URL (http://host:port); empty uses the fs backend under --data")
	fs.StringVar(&c.S3Bucket, "s3-bucket", "vigil", "S3 bucket")
	fs.StringVar(&c.S3AccessKey, "s3-access-key", "", "S3 access key")
	fs.StringVar(&c.S3SecretKey, "s3-secret-key", "", "S3 secret key")
	fs.StringVar(&c.S3Region, "s3-region", "", "S3 region")
	fs.StringVar(&c.RedisAddr, "redis-addr", "", "Redis address for the recording index; several comma-separated addresses (seeds) use a Redis Cluster; empty uses the embedded index")
	fs.BoolVar(&c.RedisCluster, "redis-cluster", false, "treat a single --redis-addr as a Redis Cluster seed (several addresses always mean a cluster)")
	fs.Int64Var(&c.IndexCache, "index-cache-mb", index.DefaultManifestCacheBytes>>20, "MiB of decoded hour manifests the index keeps in memory for segment lists and lookups (0: none)")
	fs.Int64Var(&c.MaxSegmentBytes, "max-segment-bytes", ingestDef.MaxBodyBytes, "largest accepted segment body")
	fs.DurationVar(&c.LiveThreshold, "live-threshold", ingestDef.LiveThreshold, "segments older than this are backlog")
	fs.IntVar(&c.LiveConcurrency, "live-concurrency", ingestDef.LiveConcurrency, "concurrent live uploads")
	fs.IntVar(&c.BacklogConcurrency, "backlog-concurrency", ingestDef.BacklogConcurrency, "concurrent backlog uploads")
	fs.IntVar(&c.BacklogQueue, "backlog-queue", ingestDef.BacklogQueue, "backlog uploads waiting for a slot before 503")
	fs.Float64Var(&c.BacklogYield, "backlog-live-slowdown", ingestDef.BacklogYield, "the backlog pool halves while live uploads are slower than this multiple of their recent best, and regrows by one slot each 0.5 s; -1 keeps it at --backlog-concurrency")
	fs.DurationVar(&c.CompactInterval, "compact-interval", time.Minute, "how often closed hours are compacted into manifests")
	fs.DurationVar(&c.CompactGrace, "compact-grace", 5*time.Minute, "how long after its end an hour stays open")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.DebugAddr, "debug-addr", "", "serve net/http/pprof on this address (off when empty)")
	fs.IntVar(&c.RTSPMaxUnauth, "rtsp-max-unauthenticated", rtsp.DefaultMaxUnauthenticated, "RTSP connections not yet authenticated, apart from --rtsp-max-sessions; a new one beyond it closes the oldest")
	fs.IntVar(&c.RTSPMaxUnauthPerIP, "rtsp-max-unauthenticated-per-ip", rtsp.DefaultMaxUnauthenticatedPerIP, "unauthenticated RTSP connections per remote address; more are answered 503 and closed")
	fs.DurationVar(&c.RTSPAuthTimeout, "rtsp-auth-timeout", rtsp.DefaultAuthTimeout, "an RTSP connection that has not authenticated within this is closed")
	fs.IntVar(&c.AuthFailureBurst, "auth-failure-burst", auth.DefaultBurst, "failed authentications (HTTP and RTSP) one source address may make before it is refused (429, RTSP 503)")
	fs.IntVar(&c.AuthIdentityBurst, "auth-failure-identity-burst", auth.DefaultIdentityBurst, "failed RTSP authentications for one user from all sources before new sources claiming it are refused")
	fs.DurationVar(&c.AuthFailureRefill, "auth-failure-refill", auth.DefaultRefill, "after the burst, one more failed authentication is allowed per this interval")
	fs.IntVar(&c.UsageResolveMax, "usage-resolve-max", meter.DefaultResolveMax, "uploads of unknown outcome (and a killed process's) checked against storage per usage flush (1s); the rest wait for the next")
	fs.StringVar(&c.SKUPrefix, "sku-prefix", "", "prefix of every SKU in billing runs and the meter's stream records (e.g. Mx- for Mx-HD1-D30); [A-Za-z0-9-]{0,16}")
	c.Retention.register(fs)
	c.Guard.register(fs)
	c.Health.register(fs)
	c.Live.register(fs)
	c.SMTP.register(fs)
}

func (c *nodeConfig) validate() error {
	if c.NodeID == "" {
		h, err := os.Hostname()
		if err != nil || !storage.ValidID(h) {
			h = "node1"
		}
		c.NodeID = h
	}
	if !storage.ValidID(c.NodeID) {
		return fmt.Errorf("--node-id %q: want [A-Za-z0-9_-]{1,64}", c.NodeID)
	}
	for _, r := range strings.Split(c.Roles, ",") {
		if r != "ingest" && r != "meter" {
			return fmt.Errorf("--roles: unknown role %q (want ingest, meter)", r)
		}
	}
	if !c.hasRole("meter") && c.Join == "" {
		// An ingest-only node is a non-voting read replica of a meter
		// cluster; it cannot start one.
		return errors.New("--roles ingest: an ingest-only node needs --join (the HTTP address of a meter node)")
	}
	if c.MaxSegmentBytes <= 0 {
		return errors.New("--max-segment-bytes must be positive")
	}
	// A recorded segment lasts at most max(1m, 2 × --segment-duration) plus
	// one step below the jump limit, and must pass as an upload (10 min).
	if c.MaxRTPJump <= 0 || max(time.Minute, 2*c.SegmentDuration)+c.MaxRTPJump > 10*time.Minute {
		return errors.New("--segment-duration and --rtsp-max-timestamp-jump: recorded segments could exceed the 10 min an upload may last")
	}
	if c.UsageResolveMax <= 0 {
		return errors.New("--usage-resolve-max must be positive")
	}
	if err := c.Health.validate(); err != nil {
		return err
	}
	if err := billing.ValidSKUPrefix(c.SKUPrefix); err != nil {
		return fmt.Errorf("--sku-prefix: %w", err)
	}
	return c.Guard.validate()
}

// hasRole reports whether --roles names role.
func (c *nodeConfig) hasRole(role string) bool {
	for _, r := range strings.Split(c.Roles, ",") {
		if strings.TrimSpace(r) == role {
			return true
		}
	}
	return false
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fset := newFlagSet("serve", "serve [flags]", `Runs one vigil node: Bridge uploads (HTTP PUT) and RTSP publishing, playback
(recordings, HLS, clips), and the meter (a raft voter replicating accounts,
bridges, cameras, streams and usage). With no flags it keeps everything under
./vigil-data (fs storage, embedded index, a single-voter meter), serves HTTP on
127.0.0.1:8080 and RTSP on 127.0.0.1:8554, and writes a generated operator token
to ./vigil-data/admin-token unless VIGIL_ADMIN_TOKEN is set. --s3-endpoint and
--redis-addr switch storage to S3/MinIO and the index to Redis; --join adds the
node to a cluster.`, stdout, stderr)
	var cfg nodeConfig
	cfg.register(fset)
	if err := parseFlags(fset, args); err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogLevel)
	n, err := startNode(ctx, cfg, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "vigil serving on http://%s (data %s, admin token in %s)\n", n.addr, cfg.DataDir, n.tokenSource)
	<-ctx.Done()
	return n.Close()
}

// node is one running vigil: all roles in one process. startNode starts
// its parts in order; each part that must be stopped registers how with
// onStop, and Close stops them in the reverse order.
type node struct {
	cfg         nodeConfig
	log         *slog.Logger
	reg         *prometheus.Registry
	addr        string
	listener    net.Listener
	adminToken  string
	tokenSource string
	store       storage.Backend
	rdb         redis.UniversalClient // nil without --redis-addr
	index       nodeIndex
	rep         *replica.Replica // the replicated state: registry, usage, billing, access
	usage       *meter.Aggregator
	bounded     index.Index // the request path's index
	ingest      *ingest.Handler
	live        *live.Buffer // parts of the streams recorded here (live.go)
	readyWait   time.Duration
	authLimiter *auth.Limiter  // failed authentications, HTTP and RTSP
	stops       []func() error // in start order
}

// nodeIndex is a node's recording index. Both implementations also trim
// a stream's oldest entries, which retention needs.
type nodeIndex interface {
	index.Index
	TrimBefore(ctx context.Context, ref storage.StreamRef, before int64) error
}

// streamLoader is an index that holds streams in memory (embedded) and
// must be told at start which streams exist.
type streamLoader interface {
	Load(ctx context.Context, refs []storage.StreamRef) error
}

// startNode opens storage, index and meter, starts the background work
// and serves HTTP on cfg.HTTPAddr.
func startNode(ctx context.Context, cfg nodeConfig, log *slog.Logger) (_ *node, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, err
	}
	// n is not the named result: every error return below sets that to
	// nil, and the cleanup still needs the node.
	n := &node{cfg: cfg, log: log, readyWait: cfg.Guard.ReadyTimeout, reg: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The start order; Close stops the parts in the reverse order: HTTP
	// first, then the background work, the usage flush, the meter, and
	// the listener and Redis last.
	for _, step := range []func(context.Context) error{
		n.openToken,
		n.openStorage,
		n.openIndex,
		n.listen,     // before the meter, which publishes this address
		n.openMeter,  // so that other nodes can forward writes here
		n.loadIndex,  // needs the meter's streams
		n.openUsage,  // flushed on the way out, before the meter closes
		n.openIngest, // shared by HTTP uploads and the RTSP recorder
		n.startBackground,
		n.serveHTTP,
	} {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	n.serveDebug()
	return n, nil
}

// onStop registers how to stop a part that has started.
func (n *node) onStop(stop func() error) { n.stops = append(n.stops, stop) }

// Close stops everything the node started, in the reverse order.
func (n *node) Close() error {
	var errs []error
	for i := len(n.stops) - 1; i >= 0; i-- {
		errs = append(errs, n.stops[i]())
	}
	n.stops = nil
	return errors.Join(errs...)
}

func (n *node) openToken(ctx context.Context) (err error) {
	n.adminToken, n.tokenSource, err = adminToken(n.cfg.DataDir)
	return err
}

func (n *node) openStorage(ctx context.Context) error {
	cfg := n.cfg
	var store storage.Backend
	var err error
	if cfg.S3Endpoint != "" {
		store, err = s3.New(ctx, s3.Config{Endpoint: cfg.S3Endpoint, Bucket: cfg.S3Bucket,
			AccessKey: cfg.S3AccessKey, SecretKey: cfg.S3SecretKey, Region: cfg.S3Region})
		if err != nil {
			return fmt.Errorf("storage: %w", err)
		}
		n.log.Info("storage: s3", "endpoint", cfg.S3Endpoint, "bucket", cfg.S3Bucket)
	} else {
		store, err = fs.New(filepath.Join(cfg.DataDir, "objects"))
		if err != nil {
			return fmt.Errorf("storage: %w", err)
		}
		n.log.Info("storage: fs", "root", filepath.Join(cfg.DataDir, "objects"))
	}
	n.store = storage.Instrument(storage.WithDeadline(store, cfg.Guard.StorageTimeout), n.reg)
	return nil
}

// openIndex opens the Redis index with --redis-addr (that client also
// holds the node's lease), else the embedded one.
func (n *node) openIndex(ctx context.Context) error {
	cfg := n.cfg
	if cfg.RedisAddr == "" {
		n.index = embedded.New(n.store, embedded.Options{Logger: n.log, CacheBytes: n.indexCacheBytes(), Registerer: n.reg})
		n.log.Info("index: embedded")
		return nil
	}
	// Request contexts bound every Redis call (a frozen Redis fails
	// an upload within --index-timeout); the socket timeouts bound the
	// background work.
	opts, err := redisOptions(cfg.RedisAddr, cfg.RedisCluster, cfg.Guard.IndexTimeout) // rediscluster.go
	if err != nil {
		return err
	}
	n.rdb = newRedisClient(opts)
	n.onStop(n.rdb.Close)
	n.index = redisindex.New(n.rdb, n.store, redisindex.Options{Logger: n.log, CacheBytes: n.indexCacheBytes(), Registerer: n.reg})
	n.log.Info("index: redis", "addr", cfg.RedisAddr)
	return nil
}

// indexCacheBytes is --index-cache-mb for the index options (-1: none).
func (n *node) indexCacheBytes() int64 {
	if n.cfg.IndexCache <= 0 {
		return -1
	}
	return n.cfg.IndexCache << 20
}

func (n *node) listen(ctx context.Context) error {
	l, err := net.Listen("tcp", n.cfg.HTTPAddr)
	if err != nil {
		return err
	}
	n.onStop(func() error { _ = l.Close(); return nil })
	n.listener, n.addr = l, l.Addr().String()
	return nil
}

func (n *node) openMeter(ctx context.Context) (err error) {
	cfg := n.cfg
	suffrage := cluster.SuffrageVoter
	if !cfg.hasRole("meter") {
		suffrage = cluster.SuffrageNonvoter // ingest-only: a local read replica
	}
	n.rep, err = replica.Open(ctx, cluster.PeerConfig{
		Dir: filepath.Join(cfg.DataDir, "meter"), NodeID: cfg.NodeID, RaftAddr: cfg.RaftAddr, RaftAdvertise: cfg.RaftAdvertise, Logger: n.log,
		Join: cfg.Join, Suffrage: suffrage, HTTPAddr: cmp.Or(cfg.HTTPAdvertise, n.addr), ClusterToken: n.adminToken, Registerer: n.reg,
	})
	if err != nil {
		return fmt.Errorf("meter: %w", err)
	}
	n.onStop(n.rep.Close)
	return nil
}

// loadIndex loads every registered stream into an index that holds
// streams in memory, so that compaction also closes the hours of streams
// nobody has touched since the restart.
func (n *node) loadIndex(ctx context.Context) error {
	ld, ok := n.index.(streamLoader)
	if !ok {
		return nil
	}
	refs, err := meterStreams{n.rep.Accounts}.StreamRefs(ctx)
	if err != nil {
		return err
	}
	if err := ld.Load(ctx, refs); err != nil {
		return fmt.Errorf("index: %w", err)
	}
	return nil
}

// openUsage starts the usage aggregator. Usage deltas from ingest go to
// the meter once a second; what the meter has not committed is kept in a
// local journal, so a killed process loses and double-counts nothing
// (docs/billing.md). Its stop (before the meter's) flushes what is pending.
func (n *node) openUsage(ctx context.Context) error {
	cfg := n.cfg
	journal, err := meter.OpenJournal(filepath.Join(cfg.DataDir, "usage"))
	if err != nil {
		return err
	}
	n.usage = meter.NewAggregator(n.rep.Meter, meter.AggregatorConfig{NodeID: cfg.NodeID, Logger: n.log, Registerer: n.reg,
		Journal: journal, ResolveTimeout: cfg.Guard.StorageTimeout, ResolveMax: cfg.UsageResolveMax,
		Resolve: func(ctx context.Context, key string) (string, error) {
			info, err := n.store.Stat(ctx, key)
			return info.Metadata[meter.PutIDMetadata], err
		}})
	n.onStop(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.usage.Close(ctx); err != nil {
			n.log.Warn("usage: deltas not flushed at shutdown; the journal keeps them", "err", err)
		}
		return journal.Close()
	})
	return nil
}

// openIngest makes the upload handler and the failed-authentication
// limiter, which HTTP and RTSP share.
func (n *node) openIngest(ctx context.Context) error {
	cfg := n.cfg
	n.bounded = index.WithDeadline(n.index, cfg.Guard.IndexTimeout)
	n.live = n.newLiveBuffer()
	n.authLimiter = auth.NewLimiter(auth.LimitConfig{Burst: cfg.AuthFailureBurst, IdentityBurst: cfg.AuthIdentityBurst, Refill: cfg.AuthFailureRefill,
		Logger: n.log, Registerer: n.reg})
	n.ingest = ingest.New(ingest.Config{
		MaxBodyBytes:       cfg.MaxSegmentBytes,
		LiveThreshold:      cfg.LiveThreshold,
		LiveConcurrency:    cfg.LiveConcurrency,
		BacklogConcurrency: cfg.BacklogConcurrency,
		BacklogQueue:       cfg.BacklogQueue,
		BacklogYield:       cfg.BacklogYield,
		BridgeShare:        cfg.Guard.BridgeShare,
		BodyIdleTimeout:    cfg.Guard.BodyIdleTimeout,
		BodyMinRate:        cfg.Guard.BodyMinRate,
		Logger:             n.log,
		Registerer:         n.reg,
		Usage:              n.usage,
	}, n.store, n.bounded, n.rep.Accounts)
	return nil
}

// startBackground runs compaction, the usage flush and, on ingest nodes,
// retention and the RTSP recorder, until the node stops. They outlive
// ctx (startNode's): only Close ends them.
func (n *node) startBackground(ctx context.Context) error {
	cfg := n.cfg
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	n.onStop(func() error { cancel(); wg.Wait(); return nil })
	wg.Go(func() { n.compactLoop(bg, cfg.CompactInterval, cfg.CompactGrace) })
	go n.usage.Run(bg)
	if !cfg.hasRole("ingest") {
		return nil
	}
	var rdb redis.UniversalClient
	if n.rdb != nil {
		rdb = n.rdb
	}
	l := nodeLease(rdb, n.rep.Leases) // lease.go
	if err := startRetention(bg, &wg, cfg, n, l, n.reg, n.log); err != nil {
		return err
	}
	return startRTSP(bg, &wg, cfg, n, n.ingest, l, n.reg, n.log) // rtsp.go
}

// serveHTTP serves the API, metrics and health on the node's listener.
func (n *node) serveHTTP(ctx context.Context) error {
	cfg, log, reg := n.cfg, n.log, n.reg
	authn := auth.New(n.adminToken, n.rep.Accounts)
	authn.LimitFailures(n.authLimiter)
	mailer, base, err := cfg.SMTP.accessMail(n.addr)
	if err != nil {
		return err
	}
	n.rep.Access = access.New(n.rep.Machine.Access, n.rep.Peer, access.Config{Log: log, Limiter: n.authLimiter,
		Accounts: n.rep.Accounts, Mailer: mailer, PublicURL: base})
	n.rep.Accounts.SetAuditor(n.rep.Access)
	n.rep.Entitlements = entitlementRegistry(n.rep, mailer, log) // entitlement.go
	authn.WithUsers(n.rep.Access)
	// Playlists sign their segment URLs with a key every node derives from
	// the shared operator token.
	play := playback.NewWithOptions(n.store, n.bounded, n.rep.Accounts, playback.Options{Logger: log, URLKey: playback.DeriveURLKey(n.adminToken),
		Audit: n.rep.Access, Signers: n.rep.Access,
		Live: n.live, LiveMaxBlocked: cfg.Live.MaxBlocked, LiveBlockedPerClient: cfg.Live.BlockedPerClient, Registerer: reg})

	rm := httpx.NewRouteMetrics(reg)
	api := http.NewServeMux()
	handle := func(mux *http.ServeMux, pattern string, h http.Handler) { mux.Handle(pattern, rm.Wrap(pattern, h)) }
	if cfg.hasRole("ingest") {
		handle(api, ingest.SegmentPattern, n.ingest)
		handle(api, playback.Pattern, play)
	}
	mount := func(h http.Handler, patterns []string) {
		for _, p := range patterns {
			handle(api, p, h)
		}
	}
	mount(n.rep.ClusterHandler(), cluster.ClusterPatterns())
	handle(api, "POST /v1/index/rebuild", auth.RequireOperator(index.RebuildHandler(n.index, meterStreams{n.rep.Accounts}, log)))
	handle(api, "POST /v1/meter/reconcile", auth.RequireOperator(reconciler(n, log))) // retention.go
	mount(n.rep.Accounts.Handler(), accounts.HandlerPatterns())
	mount(n.rep.Accounts.ConsoleHandler(), accounts.ConsolePatterns())
	mount(n.rep.Purges.Handler(n.rep.Accounts), purge.Patterns())
	mount(n.rep.Meter.Handler(n.rep.Accounts, cfg.SKUPrefix), meter.Patterns())
	if err := n.rep.Billing.SetSKUPrefix(cfg.SKUPrefix); err != nil {
		return err
	}
	mount(n.rep.Billing.Handler(), billing.Patterns())
	mount(n.rep.Access.Handler(), access.Patterns())
	mount(n.rep.Entitlements.Handler(), entitlement.Patterns())
	handle(api, health.Pattern, healthHandler(n.rep.Accounts, n.bounded, cfg.Health, reg, log)) // health.go

	root := http.NewServeMux()
	handle(root, "GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	handle(root, "GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}))
	handle(root, "GET /readyz", http.HandlerFunc(n.ready))
	page := ui.New() // the viewer page, /ui/
	for _, p := range ui.Patterns() {
		handle(root, p, page)
	}
	// Unknown routes and methods answer the contract's JSON error too.
	root.Handle("/v1/", authn.Middleware(httpx.JSONMux(api), func(r *http.Request) bool {
		return playback.HasURLSignature(r) || access.Anonymous(r)
	}))

	cl := connlimit.New(n.listener, connlimit.Config{MaxConns: cfg.Guard.maxConns(), MaxConnsPerIP: cfg.Guard.MaxConnsPerIP, Logger: log, Registerer: reg})
	srv := &http.Server{Handler: httpx.CloseUnread(httpx.JSONMux(root)), ReadHeaderTimeout: cfg.Guard.HeaderTimeout, IdleTimeout: cfg.Guard.IdleTimeout, ConnState: cl.ConnState}
	go func() {
		if err := srv.Serve(cl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "err", err)
		}
	}()
	n.onStop(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(ctx)
	})
	return nil
}

// serveDebug serves net/http/pprof on --debug-addr, if set, for the
// life of the process.
func (n *node) serveDebug() {
	if n.cfg.DebugAddr == "" {
		return
	}
	dbg := http.NewServeMux()
	dbg.HandleFunc("/debug/pprof/", pprof.Index)
	dbg.HandleFunc("/debug/pprof/profile", pprof.Profile)
	dbg.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() {
		if err := http.ListenAndServe(n.cfg.DebugAddr, dbg); err != nil {
			n.log.Error("debug server", "err", err)
		}
	}()
}

// compactLoop closes hours into manifests once they ended grace ago.
func (n *node) compactLoop(ctx context.Context, every, grace time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cutoff := time.Now().Add(-grace).UnixMilli()
			if err := n.index.Compact(ctx, cutoff); err != nil && ctx.Err() == nil {
				n.log.Warn("index compaction", "err", err)
			}
		}
	}
}

// adminToken returns the operator token from VIGIL_ADMIN_TOKEN, or the one
// kept in DIR/admin-token, generating it (mode 0600) on first start.
func adminToken(dir string) (token, source string, err error) {
	if t := os.Getenv("VIGIL_ADMIN_TOKEN"); t != "" {
		return t, "VIGIL_ADMIN_TOKEN", nil
	}
	path := filepath.Join(dir, "admin-token")
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), path, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", "", err
	}
	t := auth.NewToken()
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", "", err
	}
	return t, path, nil
}

// meterStreams lists the meter's live streams for an index rebuild.
type meterStreams struct{ m *accounts.Registry }

func (s meterStreams) StreamRefs(ctx context.Context) ([]storage.StreamRef, error) {
	streams, err := s.m.Streams(ctx)
	if err != nil {
		return nil, err
	}
	refs := make([]storage.StreamRef, len(streams))
	for i, st := range streams {
		refs[i] = storage.StreamRef{Account: st.Account, Camera: st.Camera, Stream: st.ID}
	}
	return refs, nil
}
