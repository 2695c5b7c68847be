package bench

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// BridgeConfig describes a simulated Bridge.
type BridgeConfig struct {
	Streams         []string
	SegmentDuration time.Duration
	Body            []byte // one segment's payload, reused for every segment
	ContentType     string
	Width, Height   int
	// Payloads override Body, ContentType, Width and Height per stream
	// (each camera stream uploads video of its own size).
	Payloads map[string]Payload
	// Live is how long live recording runs (in real time). Every stream
	// uploads one segment per SegmentDuration.
	Live time.Duration
	// Outage is how much video each stream buffered while the internet
	// was down; it is drained as backlog while live continues.
	Outage time.Duration
	// BacklogWorkers upload the backlog concurrently.
	BacklogWorkers int
	// Now is the simulation's clock (the start of the live phase).
	Now func() time.Time
}

// Payload is what one stream uploads for every segment.
type Payload struct {
	Body          []byte
	ContentType   string
	Width, Height int
}

// Report sums up a simulation.
type Report struct {
	Live, Backlog Tally
}

// Tally counts the outcomes of one class of uploads.
type Tally struct {
	Segments  int
	Bytes     int64
	Statuses  map[int]int
	Failures  int // no final answer (gave up or cancelled)
	Latencies []time.Duration
	Elapsed   time.Duration
}

// Percentile returns the p-th percentile (0..100) of the latencies.
func (t *Tally) Percentile(p float64) time.Duration {
	if len(t.Latencies) == 0 {
		return 0
	}
	s := slices.Clone(t.Latencies)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

// Stored is how many segments got a 2xx.
func (t *Tally) Stored() int { return t.Statuses[201] + t.Statuses[200] }

func (t *Tally) add(r Result, err error, size int) {
	t.Segments++
	if t.Statuses == nil {
		t.Statuses = map[int]int{}
	}
	if err != nil {
		t.Failures++
		return
	}
	t.Statuses[r.Status]++
	if r.Status/100 == 2 {
		t.Bytes += int64(size)
	}
	t.Latencies = append(t.Latencies, r.Latency)
}

// String renders the tally in one line.
func (t *Tally) String() string {
	rate := 0.0
	if t.Elapsed > 0 {
		rate = float64(t.Stored()) / t.Elapsed.Seconds()
	}
	s := fmt.Sprintf("%d segments, %d stored (%d new, %d already stored), %d without an answer",
		t.Segments, t.Stored(), t.Statuses[201], t.Statuses[200], t.Failures)
	// Other final answers (409, 404, …) are worth a line of their own.
	var other []string
	for _, code := range slices.Sorted(maps.Keys(t.Statuses)) {
		if code != 200 && code != 201 {
			other = append(other, fmt.Sprintf("%d %s ×%d", code, http.StatusText(code), t.Statuses[code]))
		}
	}
	if len(other) > 0 {
		s += ", refused: " + strings.Join(other, ", ")
	}
	return s + fmt.Sprintf("; %.1f MB at %.1f segments/s, latency p50 %v, p99 %v",
		float64(t.Bytes)/1e6, rate, t.Percentile(50).Round(time.Millisecond/10), t.Percentile(99).Round(time.Millisecond/10))
}

// RunBridge simulates a Bridge: the backlog of an Outage is drained by
// BacklogWorkers while every stream keeps uploading live segments in real
// time for Live. It returns when both are done or ctx ends.
func RunBridge(ctx context.Context, up *Uploader, cfg BridgeConfig) (Report, error) {
	if cfg.SegmentDuration <= 0 {
		return Report{}, fmt.Errorf("bridge: segment duration must be positive")
	}
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	t0 := now().Truncate(cfg.SegmentDuration)
	var (
		mu  sync.Mutex
		rep Report
	)
	seg := func(stream string, start time.Time, backlog bool) Segment {
		p, ok := cfg.Payloads[stream]
		if !ok {
			p = Payload{Body: cfg.Body, ContentType: cfg.ContentType, Width: cfg.Width, Height: cfg.Height}
		}
		return Segment{Stream: stream, Start: start, Duration: cfg.SegmentDuration, Body: p.Body,
			ContentType: p.ContentType, Width: p.Width, Height: p.Height, Backlog: backlog}
	}
	g, ctx := errgroup.WithContext(ctx)

	// Backlog: the outage's segments, oldest first, interleaved by stream.
	backlog := make(chan Segment)
	g.Go(func() error {
		defer close(backlog)
		for start := t0.Add(-cfg.Outage); start.Before(t0); start = start.Add(cfg.SegmentDuration) {
			for _, s := range cfg.Streams {
				select {
				case backlog <- seg(s, start, true):
				case <-ctx.Done():
					return nil
				}
			}
		}
		return nil
	})
	workers := max(cfg.BacklogWorkers, 1)
	began := time.Now()
	var bwg sync.WaitGroup
	for range workers {
		bwg.Add(1)
		g.Go(func() error {
			defer bwg.Done()
			for s := range backlog {
				r, err := up.Upload(ctx, s)
				mu.Lock()
				rep.Backlog.add(r, err, len(s.Body))
				mu.Unlock()
			}
			return nil
		})
	}
	g.Go(func() error {
		bwg.Wait()
		mu.Lock()
		rep.Backlog.Elapsed = time.Since(began)
		mu.Unlock()
		return nil
	})

	// Live: one segment per stream each time a segment's worth of time has
	// passed, sent when it ends, as a camera would.
	g.Go(func() error {
		var lwg sync.WaitGroup
		defer func() {
			lwg.Wait()
			mu.Lock()
			rep.Live.Elapsed = time.Since(began)
			mu.Unlock()
		}()
		tick := time.NewTicker(cfg.SegmentDuration)
		defer tick.Stop()
		for i := 0; time.Duration(i)*cfg.SegmentDuration < cfg.Live; i++ {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
			start := t0.Add(time.Duration(i) * cfg.SegmentDuration)
			for _, s := range cfg.Streams {
				lwg.Add(1)
				go func(sg Segment) {
					defer lwg.Done()
					r, err := up.Upload(ctx, sg)
					mu.Lock()
					rep.Live.add(r, err, len(sg.Body))
					mu.Unlock()
				}(seg(s, start, false))
			}
		}
		return nil
	})
	err := g.Wait()
	return rep, err
}
