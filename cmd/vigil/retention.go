package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilcloud/vigil/bench"
	"github.com/vigilcloud/vigil/lease"
	"github.com/vigilcloud/vigil/retention"
)

// retentionFlags configure the sweeper, the purge worker and the S3 safety net.
type retentionFlags struct {
	Interval      time.Duration
	Margin        time.Duration
	PurgeInterval time.Duration
	PurgeStraggle time.Duration
	LifecycleDays int
	LeaseTTL      time.Duration
}

func (r *retentionFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&r.Interval, "retention-interval", retention.DefaultSweepInterval, "how often the retention sweeper runs")
	fs.DurationVar(&r.Margin, "retention-margin", retention.DefaultMargin, "kept beyond retention, so a clock running ahead never deletes early")
	fs.DurationVar(&r.PurgeInterval, "purge-interval", retention.DefaultPurgeInterval, "how often open purge jobs are looked for")
	fs.DurationVar(&r.PurgeStraggle, "purge-straggle", retention.DefaultStraggle, "a purge is done only after a listing this long after the deletion finds nothing (in-flight uploads)")
	fs.DurationVar(&r.LeaseTTL, "retention-lease-ttl", retention.DefaultLeaseTTL, "lease of a stream's sweep or a purge job; a crashed holder's lease frees after this")
	fs.IntVar(&r.LifecycleDays, "s3-lifecycle-days", 0, "S3 only: set a bucket lifecycle rule expiring objects older than this many days (longest plan + margin); 0 = off")
}

// nodeUsage is the node's one way to report freed and corrected stored
// bytes, for the sweeper, the purge worker and reconcile: its usage
// Aggregator (journaled, batched with ingest's deltas), read back from the
// meter where a count must be exact (docs/retention.md).
func nodeUsage(n *node) retention.MeterUsage {
	return retention.MeterUsage{Agg: n.usage, M: n.rep.Meter}
}

// startRetention runs the sweeper and the purge worker until ctx ends; wg
// tracks them. l is the node's lease.
func startRetention(ctx context.Context, wg *sync.WaitGroup, cfg nodeConfig, n *node, l lease.Lease,
	reg prometheus.Registerer, log *slog.Logger) error {
	met := retention.NewMetrics(reg)
	rf := cfg.Retention
	usage := nodeUsage(n)
	sw := retention.NewSweeper(retention.SweeperConfig{
		Interval: rf.Interval, Margin: rf.Margin, LeaseTTL: rf.LeaseTTL, Logger: log, Metrics: met,
	}, n.store, n.index, n.rep.Accounts, usage, l)
	straggle := rf.PurgeStraggle
	if straggle == 0 {
		straggle = -1 // the flag's 0 means none
	}
	pw := retention.NewPurger(retention.PurgerConfig{
		Interval: rf.PurgeInterval, Straggle: straggle, LeaseTTL: rf.LeaseTTL, Logger: log, Metrics: met,
	}, n.store, n.index, n.rep.Purges, usage, l)
	if rf.LifecycleDays > 0 {
		if cfg.S3Endpoint == "" {
			return fmt.Errorf("--s3-lifecycle-days needs S3 storage")
		}
		if err := setLifecycle(ctx, cfg, rf.LifecycleDays); err != nil {
			return err
		}
		log.Info("retention: S3 lifecycle safety net set", "days", rf.LifecycleDays)
	}
	wg.Add(2)
	go func() { defer wg.Done(); sw.Run(ctx) }()
	go func() { defer wg.Done(); pw.Run(ctx) }()
	return nil
}

func setLifecycle(ctx context.Context, cfg nodeConfig, days int) error {
	u, err := url.Parse(cfg.S3Endpoint)
	if err != nil {
		return fmt.Errorf("--s3-endpoint: %w", err)
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds: credentials.NewStaticV4(cfg.S3AccessKey, cfg.S3SecretKey, ""), Secure: u.Scheme == "https", Region: cfg.S3Region,
	})
	if err != nil {
		return err
	}
	return retention.SetLifecycle(ctx, c, cfg.S3Bucket, "", days)
}

func runBenchRetention(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newBenchFlags("retention", "The retention sweeper's delete rate against the baseline of minio-go RemoveObjects,\ncamera purge time, and the cost of an idle sweep. Needs minio (see --minio).", "a short run (a couple of minutes) on smaller stores", "where MinIO and the meter keep data", stdout, stderr)
	minioBin := f.fs.String("minio", "", "the minio binary (default: minio on PATH, else the one scripts/test.sh built under ~/.cache/vigil-tools)")
	_, dir, cleanup, err := f.parse(args)
	if err != nil {
		return err
	}
	defer cleanup()
	// Seeding MinIO goes at 300–800 objects/s here, so the full run
	// deletes 20,000 segments per side and its idle stores are sparse (see
	// bench.IdleStore); quick mode's idle stores hold every object.
	cfg := bench.RetentionConfig{WorkDir: dir, MinIOBin: *minioBin, DeleteSegments: 20_000, DeleteRounds: 4, PurgeSegments: 100_000,
		Idle: []bench.IdleStore{{Streams: 1000, Segments: 100_000, Sparse: true}, {Streams: 1000, Segments: 1_000_000, Sparse: true}},
		Log:  newLogger(stderr, "info")}
	if *f.quick {
		cfg.DeleteSegments, cfg.DeleteRounds, cfg.PurgeSegments = 10_000, 2, 10_000
		cfg.Idle = []bench.IdleStore{{Streams: 200, Segments: 2_000}, {Streams: 200, Segments: 20_000}}
		fmt.Fprintln(stdout, "quick mode: 10,000 segments per delete side in 2 rounds, a 10,000-segment camera purged, idle store of 200 streams with 2,000 and 20,000 segments")
	} else {
		fmt.Fprintln(stdout, "full mode: 20,000 segments per delete side in 4 rounds, a 100,000-segment camera purged, idle stores of 1,000 streams with 100,000 and 1,000,000 segments (sparse: every hour manifest, the first segment object of each hour)")
	}
	res, err := bench.RunRetention(ctx, cfg)
	if err != nil {
		return err
	}
	printBench(stdout, "retention", res, *f.asJSON)
	return nil
}

// reconciler serves POST /v1/meter/reconcile: the meter's stored bytes per
// stream against the segment objects in storage.
func reconciler(n *node, log *slog.Logger) http.Handler {
	r := &retention.Reconciler{Store: n.store, Streams: n.rep.Accounts, Usage: nodeUsage(n), Log: log}
	return r.Handler()
}

// meterReconcile is `vigil meter reconcile`: it asks a node to compare the
// meter's stored bytes with storage and fix any drift, and prints it.
func meterReconcile(ctx context.Context, c *apiClient, stream string, dryRun bool, stdout io.Writer) error {
	q := url.Values{}
	if stream != "" {
		q.Set("stream", stream)
	}
	if dryRun {
		q.Set("dry_run", "1")
	}
	var res struct {
		Streams int               `json:"streams"`
		Drifted int               `json:"drifted"`
		Drifts  []retention.Drift `json:"drifts"`
	}
	if err := c.do(ctx, "POST", "/v1/meter/reconcile?"+q.Encode(), nil, &res); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tMETER BYTES\tSTORAGE BYTES\tDRIFT BYTES\tDRIFT OBJECTS\tFIXED")
	for _, d := range res.Drifts {
		if d.DriftBytes != 0 || d.DriftObjects != 0 || stream != "" {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%v\n", d.Stream, d.MeterBytes, d.StorageBytes, d.DriftBytes, d.DriftObjects, d.Fixed)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d streams checked, %d drifted\n", res.Streams, res.Drifted)
	return nil
}
