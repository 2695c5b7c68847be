package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/storage"
	"github.com/vigilcloud/vigil/storage/fs"
)

// PlaybackConfig sets up `vigil bench playback`.
type PlaybackConfig struct {
	VigilBin string
	WorkDir  string
	// Hours of real 6-s, 2 Mbit/s fMP4 segments uploaded over HTTP PUT.
	Hours int
	// ListDays is the length of the long recordings window. The days
	// before the uploaded hours are seeded as hour manifests only (no
	// segment objects): the recordings list reads the index, never the
	// objects, so it sees a stream with ListDays of segments.
	ListDays int
	Runs     int // repetitions; medians are reported
	Log      *slog.Logger
}

const (
	pbSegMS   = 6000
	pbStream  = "pb"
	pbCamera  = "pbcam"
	pbAccount = "bench" // startBenchNode's account
)

// RunPlayback seeds one stream and measures the viewer side of a real
// `vigil serve` (fs backend): recordings-list latency over one hour and
// over ListDays, a segment's time to first byte, and clip.mp4 over one hour
// (time to first byte, throughput, the node's peak RSS) against fetching
// the same hour's segments one after another with GET /segments/{start}.
func RunPlayback(ctx context.Context, cfg PlaybackConfig) ([]Metric, error) {
	log := cfg.Log
	seg, err := playbackSegment(ctx, filepath.Join(cfg.WorkDir, "payload"))
	if err != nil {
		return nil, err
	}
	n, err := startPlaybackNode(ctx, cfg.VigilBin, cfg.WorkDir, "vigil-playback", nil)
	if err != nil {
		return nil, err
	}
	defer n.Close()
	// The uploaded hours end an hour ago (closed hours); the manifest-only
	// days come before them, so the long window is exactly ListDays.
	realFrom := time.Now().Truncate(time.Hour).Add(-time.Duration(cfg.Hours+1) * time.Hour).UnixMilli()
	realTo := realFrom + int64(cfg.Hours)*index.HourMS
	longFrom := realTo - int64(cfg.ListDays)*24*index.HourMS

	began := time.Now()
	manifestSegs, err := seedManifests(ctx, filepath.Join(cfg.WorkDir, "vigil-playback", "data", "objects"), seg, longFrom, realFrom)
	if err != nil {
		return nil, err
	}
	log.Info("bench playback: manifests seeded", "hours", (realFrom-longFrom)/index.HourMS, "segments", manifestSegs, "took", time.Since(began).Round(time.Millisecond))
	// No index rebuild needed: the node loads the stream (scanning its
	// manifests) on first access. A timeline request makes it: an upload
	// would have to load it within --index-timeout, which a loaded machine
	// may miss for every upload in turn.
	if _, err := n.fetch(ctx, n.recordingsURL(longFrom, realFrom)+"&spans=only"); err != nil {
		return nil, err
	}
	began = time.Now()
	uploaded, err := n.seedSegments(ctx, seg, realFrom, realTo)
	if err != nil {
		return nil, err
	}
	log.Info("bench playback: segments uploaded", "segments", uploaded, "MB", float64(uploaded*len(seg))/1e6, "took", time.Since(began).Round(time.Millisecond))
	// The hour the clip and the raw fetches cover: the last uploaded one.
	hourFrom := realTo - index.HourMS
	// The clip and raw runs go first: the long recordings lists leave the
	// node's heap grown, which would show as the clip's RSS.
	var clips, raws []transfer
	var startRSS, peakRSS []float64
	for run := range max(cfg.Runs, 1) {
		// Alternate which side goes first, so drift on the shared box
		// favours neither.
		sides := []func() error{
			func() error {
				// clear_refs 5 resets VmHWM to the current RSS.
				_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", n.Pid()), []byte("5"), 0)
				before, _ := n.PeakRSS()
				tr, err := n.fetch(ctx, fmt.Sprintf("%s/v1/streams/%s/clip.mp4?start=%d&end=%d", n.base, pbStream, hourFrom, hourFrom+index.HourMS))
				if err != nil {
					return err
				}
				peak, _ := n.PeakRSS()
				clips = append(clips, tr)
				startRSS, peakRSS = append(startRSS, float64(before)/(1<<20)), append(peakRSS, float64(peak)/(1<<20))
				return nil
			},
			func() error {
				var tr transfer
				began := time.Now()
				for s := hourFrom; s < hourFrom+index.HourMS; s += pbSegMS {
					one, err := n.fetch(ctx, n.segmentURL(s))
					if err != nil {
						return err
					}
					if tr.bytes == 0 {
						tr.ttfb = one.ttfb
					}
					tr.bytes += one.bytes
				}
				tr.took = time.Since(began)
				raws = append(raws, tr)
				return nil
			},
		}
		if run%2 == 1 {
			sides[0], sides[1] = sides[1], sides[0]
		}
		for _, side := range sides {
			if err := side(); err != nil {
				return nil, err
			}
		}
		c, r := clips[len(clips)-1], raws[len(raws)-1]
		log.Info("bench playback: clip run", "run", run, "clip_MBps", c.mbps(), "clip_ttfb", c.ttfb, "clip_MB", float64(c.bytes)/1e6,
			"raw_MBps", r.mbps(), "rss_before_MiB", startRSS[len(startRSS)-1], "peak_rss_MiB", peakRSS[len(peakRSS)-1])
	}
	var list1h, list30d, segTTFB, timeline, dayPage []time.Duration
	// The timeline (spans only) over at most 30 days and one page of the
	// last day's segments; both should stay flat as --list-days grows.
	tlDays := min(cfg.ListDays, 30)
	tlFrom := realTo - int64(tlDays)*24*index.HourMS
	dayFrom := max(realTo-24*index.HourMS, longFrom)
	longOK := cfg.ListDays <= 31 // the unpaged list's window limit
	for run := range max(cfg.Runs, 1) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		list1h = append(list1h, n.timeGets(ctx, log, 100, false, func(int) string { return n.recordingsURL(hourFrom, hourFrom+index.HourMS) })...)
		segTTFB = append(segTTFB, n.timeGets(ctx, log, 50, true, func(i int) string {
			return n.segmentURL(hourFrom + int64((i*37+run*11)%(3600_000/pbSegMS))*pbSegMS)
		})...)
		timeline = append(timeline, n.timeGets(ctx, log, 100, false, func(int) string { return n.recordingsURL(tlFrom, realTo) + "&spans=only" })...)
		dayPage = append(dayPage, n.timeGets(ctx, log, 20, false, func(int) string { return n.recordingsURL(dayFrom, realTo) + "&limit=20000" })...)
		if longOK {
			list30d = append(list30d, n.timeGets(ctx, log, 5, false, func(int) string { return n.recordingsURL(longFrom, realTo) })...)
		}
		log.Info("bench playback: list run", "run", run, "list_1h_p50", pct(list1h, 50), "list_long_p50", pct(list30d, 50),
			"timeline_p99", pct(timeline, 99), "day_page_p99", pct(dayPage, 99), "segment_ttfb_p50", pct(segTTFB, 50))
	}

	var rec struct {
		Segments []struct{ Start int64 } `json:"segments"`
	}
	if longOK {
		if err := n.callJSON(ctx, "GET", fmt.Sprintf("/v1/streams/%s/recordings?start=%d&end=%d", pbStream, longFrom, realTo), nil, &rec); err != nil {
			return nil, err
		}
		if want := manifestSegs + uploaded; len(rec.Segments) != want {
			return nil, fmt.Errorf("bench playback: the %d-day window lists %d segments, want %d", cfg.ListDays, len(rec.Segments), want)
		}
	}
	var day struct {
		Segments   []struct{ Start int64 } `json:"segments"`
		NextCursor string                  `json:"next_cursor"`
	}
	if err := n.callJSON(ctx, "GET", fmt.Sprintf("/v1/streams/%s/recordings?start=%d&end=%d&limit=20000", pbStream, dayFrom, realTo), nil, &day); err != nil {
		return nil, err
	}
	if want := int((realTo - dayFrom) / pbSegMS); len(day.Segments) != want || day.NextCursor != "" {
		return nil, fmt.Errorf("bench playback: the last day's page lists %d segments (next %q), want %d", len(day.Segments), day.NextCursor, want)
	}
	tlMet := ms(pct(timeline, 99)) < 20
	dayMet := ms(pct(dayPage, 99)) < 50

	clip, raw := medianTransfer(clips), medianTransfer(raws)
	growth := make([]float64, len(peakRSS))
	for i := range peakRSS {
		growth[i] = peakRSS[i] - startRSS[i]
	}
	slices.Sort(growth)
	slices.Sort(startRSS)
	slices.Sort(peakRSS)
	grew := round(growth[len(growth)/2])
	bounded := grew < 64
	return []Metric{
		{Metric: "recordings_list_1h_p50", Unit: "ms", Value: ms(pct(list1h, 50))},
		{Metric: "recordings_list_1h_p99", Unit: "ms", Value: ms(pct(list1h, 99))},
		{Metric: fmt.Sprintf("recordings_list_%dd_p50", cfg.ListDays), Unit: "ms", Value: ms(pct(list30d, 50))},
		{Metric: fmt.Sprintf("recordings_list_%dd_p99", cfg.ListDays), Unit: "ms", Value: ms(pct(list30d, 99))},
		{Metric: fmt.Sprintf("recordings_list_%dd_segments", cfg.ListDays), Unit: "count", Value: float64(len(rec.Segments))},
		{Metric: fmt.Sprintf("recordings_timeline_%dd_p50", tlDays), Unit: "ms", Value: ms(pct(timeline, 50)), Baseline: ms(pct(list1h, 50))},
		{Metric: fmt.Sprintf("recordings_timeline_%dd_p99", tlDays), Unit: "ms", Value: ms(pct(timeline, 99)), Baseline: ms(pct(list1h, 99)), Goal: "< 20", Met: &tlMet},
		{Metric: "recordings_day_page_p50", Unit: "ms", Value: ms(pct(dayPage, 50)), Baseline: ms(pct(list1h, 50))},
		{Metric: "recordings_day_page_p99", Unit: "ms", Value: ms(pct(dayPage, 99)), Baseline: ms(pct(list1h, 99)), Goal: "< 50", Met: &dayMet},
		{Metric: "segment_ttfb_p50", Unit: "ms", Value: ms(pct(segTTFB, 50))},
		{Metric: "segment_ttfb_p99", Unit: "ms", Value: ms(pct(segTTFB, 99))},
		{Metric: "clip_1h_ttfb", Unit: "ms", Value: ms(clip.ttfb), Baseline: ms(raw.ttfb)},
		{Metric: "clip_1h_bytes", Unit: "MB", Value: round(float64(clip.bytes) / 1e6), Baseline: round(float64(raw.bytes) / 1e6)},
		ratioMetric("clip_1h_throughput", "MB/s", clip.mbps(), raw.mbps(), 0),
		{Metric: "clip_1h_peak_rss", Unit: "MiB", Value: round(peakRSS[len(peakRSS)/2]), Baseline: round(startRSS[len(startRSS)/2])},
		{Metric: "clip_1h_rss_growth", Unit: "MiB", Value: grew, Goal: "< 64 (bounded; the hour is ~950 MB)", Met: &bounded},
	}, nil
}

// startPlaybackNode starts a node (in workDir/name) with the stream the
// playback bench reads.
func startPlaybackNode(ctx context.Context, bin, workDir, name string, env []string) (*benchNode, error) {
	n, err := startBenchNode(ctx, IngestConfig{VigilBin: bin, WorkDir: workDir}, name, env)
	if err != nil {
		return nil, err
	}
	if err := n.call(ctx, "POST", "/v1/bridges/bench-bridge/cameras", map[string]any{"id": pbCamera, "name": pbCamera,
		"streams": []map[string]any{{"id": pbStream, "width": 1280, "height": 720, "retention_days": 3650}}}); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// playbackSegment returns a 6-s 1280x720 H.264 fragmented MP4 at about
// 2 Mbit/s (keyframe every 2 s, one fragment per GOP), made by ffmpeg once.
func playbackSegment(ctx context.Context, dir string) ([]byte, error) {
	path := filepath.Join(dir, "pb-720p-2mbps-6s.mp4")
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
		return b, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	tmp := path + ".tmp"
	out, err := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-t", "6", "-c:v", "libx264", "-preset", "veryfast",
		"-b:v", "2M", "-maxrate", "2M", "-bufsize", "2M", "-g", "50", "-pix_fmt", "yuv420p",
		"-movflags", "+frag_keyframe+empty_moov+default_base_moof", "-f", "mp4", tmp).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("bench playback: ffmpeg: %v: %s", err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}

// seedManifests writes one hour manifest per hour in [from, to) into the
// node's fs store, each listing an hour of 6-s segments like seg (whose
// objects are never written), and returns how many segments they list.
// Four writers: a year is 8,760 fsynced manifests.
func seedManifests(ctx context.Context, root string, seg []byte, from, to int64) (int, error) {
	store, err := fs.New(root)
	if err != nil {
		return 0, err
	}
	sum := sha256.Sum256(seg)
	ref := storage.StreamRef{Account: pbAccount, Camera: pbCamera, Stream: pbStream}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for h := from; h < to; h += index.HourMS {
		g.Go(func() error {
			segs := make([]index.Segment, 0, index.HourMS/pbSegMS)
			for s := h; s < h+index.HourMS; s += pbSegMS {
				segs = append(segs, index.Segment{Start: s, DurationMS: pbSegMS, Size: int64(len(seg)), SHA256: hex.EncodeToString(sum[:]),
					ContentType: "video/mp4", Width: 1280, Height: 720})
			}
			if err := index.WriteManifest(gctx, store, ref, h, segs); err != nil {
				return fmt.Errorf("bench playback: seed manifest: %w", err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	return int((to - from) / pbSegMS), nil
}

// seedSegments uploads seg at every 6 s of [from, to) over HTTP PUT, on 8
// workers, and returns how many it uploaded. Like a Bridge it retries a 503
// after its Retry-After (a busy index or storage), up to 10 times.
func (n *benchNode) seedSegments(ctx context.Context, seg []byte, from, to int64) (int, error) {
	count := int((to - from) / pbSegMS)
	var firstErr atomic.Value
	up := &Uploader{BaseURL: n.base, Token: n.token, MaxAttempts: 10}
	st := measure(ctx, 8, count, len(seg), func(ctx context.Context, i int) error {
		r, err := up.Upload(ctx, Segment{Stream: pbStream, Start: time.UnixMilli(from + int64(i)*pbSegMS),
			Duration: pbSegMS * time.Millisecond, Body: seg, ContentType: "video/mp4"})
		if err == nil && r.Status != http.StatusCreated && r.Status != http.StatusOK {
			err = fmt.Errorf("PUT %s/%d: %d", pbStream, from+int64(i)*pbSegMS, r.Status)
		}
		if err != nil {
			firstErr.CompareAndSwap(nil, err)
		}
		return err
	})
	if st.errors > 0 {
		return 0, fmt.Errorf("bench playback: %d of %d uploads failed, first: %v", st.errors, count, firstErr.Load())
	}
	return count, ctx.Err()
}

func (n *benchNode) recordingsURL(from, to int64) string {
	return fmt.Sprintf("%s/v1/streams/%s/recordings?start=%d&end=%d", n.base, pbStream, from, to)
}

func (n *benchNode) segmentURL(start int64) string {
	return n.base + "/v1/streams/" + pbStream + "/segments/" + strconv.FormatInt(start, 10)
}

// transfer is one timed GET: time to the first body byte, bytes, and the
// time to the last one.
type transfer struct {
	ttfb, took time.Duration
	bytes      int64
}

func (t transfer) mbps() float64 { return float64(t.bytes) / t.took.Seconds() / 1e6 }

// fetch GETs url with the operator token and reads the whole body.
func (n *benchNode) fetch(ctx context.Context, url string) (transfer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return transfer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+n.token)
	began := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return transfer{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return transfer{}, fmt.Errorf("bench playback: GET %s: %d %s", url, resp.StatusCode, msg)
	}
	var first [1]byte
	if _, err := io.ReadFull(resp.Body, first[:]); err != nil {
		return transfer{}, fmt.Errorf("bench playback: GET %s: %w", url, err)
	}
	tr := transfer{ttfb: time.Since(began)}
	rest, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return transfer{}, fmt.Errorf("bench playback: GET %s: %w", url, err)
	}
	tr.took, tr.bytes = time.Since(began), rest+1
	return tr, nil
}

// timeGets fetches url(i) k times one after another and returns each
// request's time to its first byte (firstByte) or its last; a failed
// request is logged and left out.
func (n *benchNode) timeGets(ctx context.Context, log *slog.Logger, k int, firstByte bool, url func(i int) string) []time.Duration {
	var out []time.Duration
	for i := range k {
		tr, err := n.fetch(ctx, url(i))
		if err != nil {
			log.WarnContext(ctx, "bench playback: request failed", "err", err)
			continue
		}
		if firstByte {
			out = append(out, tr.ttfb)
		} else {
			out = append(out, tr.took)
		}
	}
	return out
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func medianTransfer(ts []transfer) transfer {
	s := slices.Clone(ts)
	slices.SortFunc(s, func(a, b transfer) int { return int(a.took - b.took) })
	m := s[len(s)/2]
	ttfbs := make([]time.Duration, len(ts))
	for i, t := range ts {
		ttfbs[i] = t.ttfb
	}
	m.ttfb = pct(ttfbs, 50)
	return m
}
