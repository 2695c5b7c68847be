package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"time"

	"github.com/minio/minio-go/v7"
	"golang.org/x/sync/errgroup"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/embedded"
	"github.com/vigilcloud/vigil/internal/servers"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/purge"
	"github.com/vigilcloud/vigil/replica"
	"github.com/vigilcloud/vigil/retention"
	"github.com/vigilcloud/vigil/storage"
	"github.com/vigilcloud/vigil/storage/s3"
)

// SeedSegments writes count segments of ref (each step apart from from,
// size bytes, with the metadata ingest stores) straight into MinIO, plus
// the hour manifests through store. Segments go up as snowball uploads
// (tar archives MinIO extracts server-side) of seedChunk objects,
// seedWorkers archives at once. It returns the total segment bytes.
func SeedSegments(ctx context.Context, mc *minio.Client, bucket string, store storage.Backend, ref storage.StreamRef, from time.Time, step time.Duration, count, size int) (int64, error) {
	return seedSegments(ctx, mc, bucket, store, ref, from, step, count, size, false)
}

// seedSegments is SeedSegments; sparse stores the segment objects of only
// the first segment of each hour (the manifests describe every segment).
func seedSegments(ctx context.Context, mc *minio.Client, bucket string, store storage.Backend, ref storage.StreamRef, from time.Time, step time.Duration, count, size int, sparse bool) (int64, error) {
	segs := make([]index.Segment, count)
	for i := range segs {
		segs[i] = index.Segment{Start: from.Add(time.Duration(i) * step).UnixMilli(), DurationMS: min(step, 10*time.Second).Milliseconds(),
			Size: int64(size), ContentType: "video/mp4"}
	}
	objects := segs
	if sparse {
		objects = nil
		for i, s := range segs {
			if i == 0 || storage.HourStart(s.Start) != storage.HourStart(segs[i-1].Start) {
				objects = append(objects, s)
			}
		}
	}
	body := make([]byte, size)
	var g errgroup.Group
	g.SetLimit(seedWorkers)
	for lo := 0; lo < len(objects); lo += seedChunk {
		part := objects[lo:min(lo+seedChunk, len(objects))]
		g.Go(func() error {
			ch := make(chan minio.SnowballObject, len(part))
			for _, s := range part {
				h := http.Header{}
				h.Set("Content-Type", s.ContentType)
				for k, v := range index.SegmentMetadata(s) {
					h.Set("X-Amz-Meta-"+k, v)
				}
				ch <- minio.SnowballObject{Key: ref.SegmentKey(s.Start), Size: s.Size, Headers: h,
					Content: io.NopCloser(bytes.NewReader(body))}
			}
			close(ch)
			if err := mc.PutObjectsSnowball(ctx, bucket, minio.SnowballOptions{Opts: minio.PutObjectOptions{}, InMemory: true, Compress: true}, ch); err != nil {
				return fmt.Errorf("bench: snowball upload: %w", err)
			}
			return nil
		})
	}
	byHour := map[int64][]index.Segment{}
	for _, s := range segs {
		h := storage.HourStart(s.Start)
		byHour[h] = append(byHour[h], s)
	}
	for h, ss := range byHour {
		g.Go(func() error { return index.WriteManifest(ctx, store, ref, h, ss) })
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	return int64(count) * int64(size), nil
}

// Seeding: snowball archives of seedChunk objects, seedWorkers at once.
// More workers do not help: MinIO's per-object work is the limit (about
// 600–800 objects/s here with 1, 4, 8 or 16 at once).
const seedChunk, seedWorkers = 5000, 2

// RetentionConfig sets up `vigil bench retention`.
type RetentionConfig struct {
	WorkDir  string
	MinIOBin string // the minio binary; empty: servers.FindMinIO
	// DeleteSegments is how many expired segments each side of the delete
	// rate comparison deletes, in DeleteRounds rounds (default 1).
	DeleteSegments int
	DeleteRounds   int
	// PurgeSegments is the size of the purged camera.
	PurgeSegments int
	// Idle are the stores the idle sweep is measured on.
	Idle []IdleStore
	Log  *slog.Logger
}

// IdleStore is a store for the idle-sweep measurement: Streams streams
// holding Segments segments in all (10 s apart, the newest a few minutes
// old, D30). Sparse stores every hour manifest (each describing all of the
// hour's segments, as ingest writes them) but only the first segment
// object of each hour: the idle sweep does no per-object I/O, and a
// million real objects take over 20 minutes to seed into MinIO here.
type IdleStore struct {
	Streams, Segments int
	Sparse            bool
}

// RunRetention measures the sweeper's delete rate against minio-go
// RemoveObjects on the same layout in the same MinIO, the purge time of a
// camera, and the idle sweep's cost.
func RunRetention(ctx context.Context, cfg RetentionConfig) ([]Metric, error) {
	log := cfg.Log
	mio, mc, err := startMinIO(ctx, cfg.WorkDir, cfg.MinIOBin)
	if err != nil {
		return nil, err
	}
	defer mio.Close()
	bucket, err := mio.MakeBucket(ctx)
	if err != nil {
		return nil, err
	}
	store, err := s3.New(ctx, s3.Config{Endpoint: "http://" + mio.Addr, Bucket: bucket, AccessKey: mio.AccessKey, SecretKey: mio.SecretKey})
	if err != nil {
		return nil, err
	}
	var out []Metric
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	step := 10 * time.Second

	// 1. Delete rate: the sweeper (its default of two delete requests at
	// once, and one at a time) vs RemoveObjects on the same layout. Each
	// round runs in a symmetric order (direct, sweeper, one at a time ×2,
	// sweeper, direct), each run on its own stream, so that a load that
	// drifts during the round weighs on both sides alike; several short
	// rounds rather than one long one for the same reason.
	idx := embedded.New(store, embedded.Options{})
	now := from.Add(400 * 24 * time.Hour)
	rounds := max(cfg.DeleteRounds, 1)
	per := cfg.DeleteSegments / (2 * rounds)
	var refs []storage.StreamRef
	for r := range rounds {
		for _, name := range []string{"direct-a", "sweep-a", "serial-a", "serial-b", "sweep-b", "direct-b"} {
			refs = append(refs, storage.StreamRef{Account: "acct", Camera: "cam", Stream: fmt.Sprintf("%s%d", name, r)})
		}
	}
	log.Info("bench retention: seeding", "segments", len(refs)*per)
	for _, ref := range refs {
		if _, err := SeedSegments(ctx, mc, bucket, store, ref, from, step, per, 1024); err != nil {
			return nil, err
		}
	}
	// A running node has its streams loaded; so does the bench.
	if err := idx.Load(ctx, refs); err != nil {
		return nil, err
	}
	var directTook, sweepTook, serialTook time.Duration
	directDelete := func(ref storage.StreamRef, took *time.Duration) error {
		began := time.Now()
		ch := make(chan minio.ObjectInfo, 1000)
		go func() {
			defer close(ch)
			for i := range per {
				ch <- minio.ObjectInfo{Key: ref.SegmentKey(from.Add(time.Duration(i) * step).UnixMilli())}
			}
		}()
		for rerr := range mc.RemoveObjects(ctx, bucket, ch, minio.RemoveObjectsOptions{}) {
			if rerr.Err != nil {
				return fmt.Errorf("bench: direct delete: %w", rerr.Err)
			}
		}
		*took += time.Since(began)
		return nil
	}
	// sweep runs the sweeper with conc delete requests at once.
	sweep := func(ref storage.StreamRef, conc int, took *time.Duration) error {
		streams := staticStreams{{ID: ref.Stream, Camera: ref.Camera, Account: ref.Account, RetentionDays: 1}}
		sw := retention.NewSweeper(retention.SweeperConfig{Now: func() time.Time { return now }, DeleteConcurrency: conc}, store, idx, streams, nil, nil)
		began := time.Now()
		st, err := sw.Sweep(ctx)
		if err != nil {
			return err
		}
		*took += time.Since(began)
		if st.Objects != int64(per) {
			return fmt.Errorf("bench: sweeper deleted %d of %d", st.Objects, per)
		}
		return nil
	}
	for r := range rounds {
		rr := refs[6*r : 6*r+6]
		var d, sw, se time.Duration
		for _, run := range []func() error{
			func() error { return directDelete(rr[0], &d) },
			func() error { return sweep(rr[1], 0, &sw) },
			func() error { return sweep(rr[2], 1, &se) },
			func() error { return sweep(rr[3], 1, &se) },
			func() error { return sweep(rr[4], 0, &sw) },
			func() error { return directDelete(rr[5], &d) },
		} {
			if err := run(); err != nil {
				return nil, err
			}
		}
		log.Info("bench retention: delete round", "round", r, "direct_objects_per_s", float64(2*per)/d.Seconds(),
			"sweeper_ratio", d.Seconds()/sw.Seconds(), "one_at_a_time_ratio", d.Seconds()/se.Seconds())
		directTook, sweepTook, serialTook = directTook+d, sweepTook+sw, serialTook+se
	}
	n := float64(2 * per * rounds)
	direct := n / directTook.Seconds()
	out = append(out, retentionRatio(fmt.Sprintf("sweeper delete rate (%d segs, %d rounds)", int(n), rounds), "objects/s", n/sweepTook.Seconds(), direct, 0.9),
		retentionRatio("sweeper delete rate, one request at a time", "objects/s", n/serialTook.Seconds(), direct, 0))

	// 2. Purge time of a camera.
	m, err := replica.Open(ctx, cluster.PeerConfig{Dir: mkdir(cfg.WorkDir, "meter"), NodeID: "bench", RaftAddr: mustPort()})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if _, err := m.Accounts.CreateAccount(ctx, "", accounts.NewAccount{ID: "pa", Name: "P"}); err != nil {
		return nil, err
	}
	if _, err := m.Accounts.CreateBridge(ctx, "", "pa", accounts.NewBridge{ID: "pb", Name: "P"}); err != nil {
		return nil, err
	}
	if _, err := m.Accounts.CreateCamera(ctx, "", "pb", accounts.NewCamera{ID: "pc", Name: "P", Streams: []accounts.NewStream{{ID: "ps"}}}); err != nil {
		return nil, err
	}
	refP := storage.StreamRef{Account: "pa", Camera: "pc", Stream: "ps"}
	log.Info("bench retention: seeding the camera to purge", "segments", cfg.PurgeSegments)
	if _, err := SeedSegments(ctx, mc, bucket, store, refP, from, step, cfg.PurgeSegments, 1024); err != nil {
		return nil, err
	}
	del, err := m.Accounts.DeleteCamera(ctx, "", "pc")
	if err != nil {
		return nil, err
	}
	// Usage goes through an Aggregator, as on a node (no journal: nothing here is killed).
	usage := retention.MeterUsage{Agg: meter.NewAggregator(m.Meter, meter.AggregatorConfig{}), M: m.Meter}
	pw := retention.NewPurger(retention.PurgerConfig{Straggle: -1}, store, idx, m.Purges, usage, nil)
	began := time.Now()
	if err := pw.RunOnce(ctx); err != nil {
		return nil, err
	}
	purgeTook := time.Since(began)
	job, err := m.Purges.Purge(ctx, del.PurgeID)
	if err != nil {
		return nil, err
	}
	if job.State != purge.PurgeDone {
		return nil, fmt.Errorf("bench: purge not done: %+v", job)
	}
	out = append(out, Metric{Metric: fmt.Sprintf("purge time (%d segs)", cfg.PurgeSegments), Unit: "s", Value: purgeTook.Seconds()})
	out = append(out, retentionRatio("purge rate", "objects/s", float64(job.ObjectsDeleted)/purgeTook.Seconds(), direct, 0))

	// 3. Idle cost, on stores of growing size.
	for _, is := range cfg.Idle {
		b, err := mio.MakeBucket(ctx)
		if err != nil {
			return nil, err
		}
		st2, err := s3.New(ctx, s3.Config{Endpoint: "http://" + mio.Addr, Bucket: b, AccessKey: mio.AccessKey, SecretKey: mio.SecretKey})
		if err != nil {
			return nil, err
		}
		per := is.Segments / is.Streams
		ss := make(staticStreams, is.Streams)
		log.Info("bench retention: seeding the idle store", "streams", is.Streams, "segments", per*is.Streams, "sparse", is.Sparse)
		recent := time.Now().Add(-time.Duration(per) * step).Truncate(time.Hour)
		var g errgroup.Group
		g.SetLimit(4)
		for i := range is.Streams {
			ref := storage.StreamRef{Account: "ia", Camera: fmt.Sprintf("c%d", i), Stream: fmt.Sprintf("s%d", i)}
			ss[i] = accounts.Stream{ID: ref.Stream, Camera: ref.Camera, Account: ref.Account, RetentionDays: 30}
			g.Go(func() error {
				_, err := seedSegments(ctx, mc, b, st2, ref, recent, step, per, 128, is.Sparse)
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		cs := &countingStore{Backend: st2}
		sw := retention.NewSweeper(retention.SweeperConfig{}, cs, embedded.New(st2, embedded.Options{}), ss, nil, nil)
		if _, err := sw.Sweep(ctx); err != nil { // the first sweep finds each stream's oldest hour
			return nil, err
		}
		cs.calls = 0
		const sweeps = 100
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		cpu0, alloc0 := processCPU(), totalAlloc()
		for range sweeps {
			if _, err := sw.Sweep(ctx); err != nil {
				return nil, err
			}
		}
		cpu := (processCPU() - cpu0) / sweeps
		alloc := float64(totalAlloc()-alloc0) / sweeps
		name := fmt.Sprintf("idle sweep, %d streams, %d segs", is.Streams, per*is.Streams)
		if is.Sparse {
			name += " (sparse)"
		}
		out = append(out,
			Metric{Metric: name + ": CPU", Unit: "µs/sweep", Value: float64(cpu.Microseconds())},
			Metric{Metric: name + ": alloc", Unit: "KiB/sweep", Value: alloc / 1024},
			Metric{Metric: name + ": heap in use", Unit: "MiB", Value: float64(ms.HeapInuse) / (1 << 20)},
			Metric{Metric: name + ": storage calls", Unit: "calls/sweep", Value: float64(cs.calls) / sweeps},
		)
	}
	return out, nil
}

func retentionRatio(name, unit string, v, base, goal float64) Metric {
	m := Metric{Metric: name, Unit: unit, Value: v, Baseline: base}
	if base > 0 {
		m.Ratio = v / base
	}
	if goal > 0 {
		met := m.Ratio >= goal
		m.Goal, m.Met = fmt.Sprintf(">= %.1fx", goal), &met
	}
	return m
}

type staticStreams []accounts.Stream

func (s staticStreams) Streams(ctx context.Context) ([]accounts.Stream, error) { return s, nil }

// countingStore counts the storage calls a sweep makes.
type countingStore struct {
	storage.Backend
	calls int
}

func (c *countingStore) List(ctx context.Context, p, a string, n int) ([]storage.ObjectInfo, error) {
	c.calls++
	return c.Backend.List(ctx, p, a, n)
}

func (c *countingStore) Get(ctx context.Context, k string, off, n int64) (io.ReadCloser, storage.ObjectInfo, error) {
	c.calls++
	return c.Backend.Get(ctx, k, off, n)
}

func (c *countingStore) Stat(ctx context.Context, k string) (storage.ObjectInfo, error) {
	c.calls++
	return c.Backend.Stat(ctx, k)
}

func (c *countingStore) Delete(ctx context.Context, keys []string) error {
	c.calls++
	return c.Backend.Delete(ctx, keys)
}

func totalAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

func mustPort() string {
	p, err := servers.FreePort()
	if err != nil {
		panic(err)
	}
	return p
}
