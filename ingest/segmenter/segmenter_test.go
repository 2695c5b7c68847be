package segmenter

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/embedded"
	"github.com/vigilcloud/vigil/ingest"
	"github.com/vigilcloud/vigil/ingest/rtsp"
	vtestutil "github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/media/fmp4"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/storage"
	"github.com/vigilcloud/vigil/storage/fs"
)

// fakeRegistry is the meter's part the recorder asks (unit tests only).
type fakeRegistry struct {
	mu      sync.Mutex
	streams map[string]accounts.Stream
	tokens  map[string]string // hash → bridge
	ha1     map[string]string
	down    bool
}

func (f *fakeRegistry) Stream(ctx context.Context, id string) (accounts.Stream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return accounts.Stream{}, errors.New("meter down")
	}
	st, ok := f.streams[id]
	if !ok {
		return accounts.Stream{}, meter.ErrNotFound
	}
	return st, nil
}

func (f *fakeRegistry) BridgeByTokenHash(ctx context.Context, hash string) (string, error) {
	if id, ok := f.tokens[hash]; ok {
		return id, nil
	}
	return "", auth.ErrUnknownToken
}

func (f *fakeRegistry) BridgeDigestHA1(ctx context.Context, id string) (string, error) {
	if h, ok := f.ha1[id]; ok {
		return h, nil
	}
	return "", meter.ErrNotFound
}

func newRegistry() *fakeRegistry {
	return &fakeRegistry{
		streams: map[string]accounts.Stream{
			"cam1-main": {ID: "cam1-main", Account: "acc", Bridge: "br1", Camera: "cam1", Width: 640, Height: 480, RetentionDays: 7},
			"cam2-main": {ID: "cam2-main", Account: "acc", Bridge: "br2", Camera: "cam2", Width: 640, Height: 480, RetentionDays: 7},
		},
		tokens: map[string]string{auth.HashToken("tok1"): "br1", auth.HashToken("tok2"): "br2"},
		ha1:    map[string]string{"br1": auth.DigestHA1("br1", accounts.DigestRealm, "tok1")},
	}
}

type rig struct {
	rec   *Recorder
	store *fs.Backend
	idx   *embedded.Index
	reg   *fakeRegistry
	ing   *ingest.Handler
	prom  *prometheus.Registry
	stop  context.CancelFunc
}

func newRig(t *testing.T, segDur time.Duration) *rig {
	t.Helper()
	dir := t.TempDir()
	store, err := fs.New(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	idx := embedded.New(store, embedded.Options{})
	reg := newRegistry()
	ing := ingest.New(ingest.Config{}, store, idx, reg)
	prom := prometheus.NewRegistry()
	rec, err := New(Config{Logger: testLogger(t), SpoolDir: filepath.Join(dir, "spool"), SegmentDuration: segDur, Registerer: prom,
		RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond}, reg, ing, idx)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rec.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &rig{rec: rec, store: store, idx: idx, reg: reg, ing: ing, prom: prom, stop: cancel}
}

func (g *rig) segments(t *testing.T, stream string) []index.Segment {
	t.Helper()
	st := g.reg.streams[stream]
	segs, err := g.idx.Segments(context.Background(), storage.StreamRef{Account: st.Account, Camera: st.Camera, Stream: st.ID}, 0, 1<<62)
	if err != nil {
		t.Fatal(err)
	}
	return segs
}

// segmentFile copies a stored segment to a file for ffprobe.
func (g *rig) segmentFile(t *testing.T, stream string, seg index.Segment) string {
	t.Helper()
	st := g.reg.streams[stream]
	ref := storage.StreamRef{Account: st.Account, Camera: st.Camera, Stream: st.ID}
	rc, _, err := g.store.Get(context.Background(), ref.SegmentKey(seg.Start), 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	p := filepath.Join(t.TempDir(), strconv.FormatInt(seg.Start, 10)+".mp4")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

// probe returns the duration ffprobe gives a file, failing on any error
// it reports.
func probe(t *testing.T, path string) (float64, string) {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "format=duration,start_time:stream=codec_name,width,height",
		"-of", "default=nw=1", path).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("rror")) {
		t.Fatalf("ffprobe %s: %v\n%s", path, err, out)
	}
	// ffmpeg counts a fragmented file's duration from zero: segments
	// that run on from the one before start later.
	var dur, start float64
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "duration="); ok {
			dur, _ = strconv.ParseFloat(v, 64)
		}
		if v, ok := strings.CutPrefix(l, "start_time="); ok {
			start, _ = strconv.ParseFloat(v, 64)
		}
	}
	dur -= start
	// Decode every frame: a segment must play alone.
	if out, err := exec.Command("ffmpeg", "-v", "error", "-i", path, "-f", "null", "-").CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("ffmpeg decode %s: %v\n%s", path, err, out)
	}
	return dur, string(out)
}

// source is media made by ffmpeg, read back with the fMP4 reader: samples
// with DTS/PTS, as RTP would carry them.
type source struct {
	tracks  []fmp4.Track
	samples [][]srcSample // by track
}

type srcSample struct {
	dts, pts int64
	key      bool
	data     []byte
}

func makeSource(t testing.TB, args ...string) *source {
	t.Helper()
	vtestutil.RequireBinary(t, "ffmpeg")
	p := filepath.Join(t.TempDir(), "src.mp4")
	all := append([]string{"-v", "error", "-y"}, args...)
	all = append(all, "-f", "mp4", "-movflags", "frag_keyframe+empty_moov+default_base_moof", p)
	if out, err := exec.Command("ffmpeg", all...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := fmp4.NewReader(f)
	tracks, _, err := r.ReadInit()
	if err != nil {
		t.Fatal(err)
	}
	src := &source{tracks: tracks, samples: make([][]srcSample, len(tracks))}
	for {
		fr, err := r.NextFragment()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, tf := range fr.Tracks {
			i := slices.IndexFunc(tracks, func(tr fmp4.Track) bool { return tr.ID == tf.TrackID })
			dts := int64(tf.BaseDecodeTime)
			for _, s := range tf.Samples {
				d, p := dts, dts+int64(s.PTSOffset)
				if tracks[i].Codec == fmp4.H264 || tracks[i].Codec == fmp4.H265 { // RTP video clock
					d, p = d*90000/int64(tracks[i].TimeScale), p*90000/int64(tracks[i].TimeScale)
				}
				src.samples[i] = append(src.samples[i], srcSample{dts: d, pts: p, key: s.Keyframe, data: bytes.Clone(s.Data)})
				dts += int64(s.Duration)
			}
		}
	}
	return src
}

// medias is the SDP ffmpeg would announce for src.
func (s *source) medias() []rtsp.Media {
	var ms []rtsp.Media
	for _, tr := range s.tracks {
		switch tr.Codec {
		case fmp4.H264:
			ms = append(ms, rtsp.Media{Type: "video", Codec: "H264", PayloadType: 96, ClockRate: 90000, Fmtp: map[string]string{
				"packetization-mode":   "1",
				"sprop-parameter-sets": base64.StdEncoding.EncodeToString(tr.SPS) + "," + base64.StdEncoding.EncodeToString(tr.PPS)}})
		case fmp4.H265:
			ms = append(ms, rtsp.Media{Type: "video", Codec: "H265", PayloadType: 96, ClockRate: 90000, Fmtp: map[string]string{
				"sprop-vps": base64.StdEncoding.EncodeToString(tr.VPS), "sprop-sps": base64.StdEncoding.EncodeToString(tr.SPS),
				"sprop-pps": base64.StdEncoding.EncodeToString(tr.PPS)}})
		case fmp4.AAC:
			ms = append(ms, rtsp.Media{Type: "audio", Codec: "MPEG4-GENERIC", PayloadType: 97, ClockRate: uint32(tr.TimeScale), Channels: tr.Channels,
				Fmtp: map[string]string{"mode": "AAC-hbr", "config": hex.EncodeToString(tr.AACConfig), "sizelength": "13", "indexlength": "3", "indexdeltalength": "3"}})
		case fmp4.Opus:
			ms = append(ms, rtsp.Media{Type: "audio", Codec: "OPUS", PayloadType: 98, ClockRate: 48000, Channels: 2})
		}
	}
	return ms
}

type rtpPkt struct {
	media int
	pkt   *rtp.Packet
	at    float64 // seconds into the stream
}

// packets packetises src as an RTSP publisher would, in send order.
func (s *source) packets() []rtpPkt {
	var out []rtpPkt
	for i, tr := range s.tracks {
		seq := uint16(1000 * (i + 1))
		base := uint32(0xfffff000) - uint32(i)*12345 // wraps soon after the start
		clock := tr.TimeScale
		if tr.Codec == fmp4.H264 || tr.Codec == fmp4.H265 {
			clock = 90000
		}
		var h264 codecs.H264Payloader
		var h265 codecs.H265Payloader
		for _, smp := range s.samples[i] {
			var payloads [][]byte
			switch tr.Codec {
			case fmp4.H264, fmp4.H265:
				var annexB []byte
				for b := smp.data; len(b) >= 4; {
					n := int(binary.BigEndian.Uint32(b))
					annexB = append(annexB, 0, 0, 0, 1)
					annexB = append(annexB, b[4:4+n]...)
					b = b[4+n:]
				}
				if tr.Codec == fmp4.H264 {
					payloads = h264.Payload(1200, annexB)
				} else {
					payloads = h265.Payload(1200, annexB)
				}
			case fmp4.AAC:
				hdr := []byte{0, 16, byte(len(smp.data) >> 5), byte(len(smp.data) << 3)}
				payloads = [][]byte{append(hdr, smp.data...)}
			case fmp4.Opus:
				payloads = [][]byte{smp.data}
			}
			for k, p := range payloads {
				out = append(out, rtpPkt{media: i, at: float64(smp.dts) / float64(clock), pkt: &rtp.Packet{
					Header:  rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: base + uint32(smp.pts), Marker: k == len(payloads)-1},
					Payload: p}})
				seq++
			}
		}
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].at < out[b].at })
	return out
}

// publish announces src on stream and sends every packet; it returns the
// sink unclosed.
func publish(t *testing.T, g *rig, stream string, src *source, t0 time.Time, pkts []rtpPkt) rtsp.Sink {
	t.Helper()
	sink, err := g.rec.Announce(context.Background(), "br1", stream, src.medias())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pkts {
		if err := sink.WriteRTP(p.media, p.pkt, t0.Add(time.Duration(p.at*float64(time.Second)))); err != nil {
			t.Fatalf("WriteRTP: %v", err)
		}
	}
	return sink
}

func checkContiguous(t *testing.T, segs []index.Segment) {
	t.Helper()
	for i := 1; i < len(segs); i++ {
		if segs[i].Start != segs[i-1].End() {
			t.Errorf("segment %d starts at %d, previous ends at %d", i, segs[i].Start, segs[i-1].End())
		}
	}
}

func TestRecordH264WithBFramesAndAAC(t *testing.T) {
	vtestutil.RequireBinary(t, "ffprobe")
	src := makeSource(t, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "7", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "3", "-g", "25", "-c:a", "aac", "-b:a", "64k")
	g := newRig(t, 2*time.Second)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	sink := publish(t, g, "cam1-main", src, t0, src.packets())
	sink.Close(nil)
	g.rec.uploads.Wait()

	segs := g.segments(t, "cam1-main")
	if len(segs) < 3 {
		t.Fatalf("%d segments, want >= 3: %+v", len(segs), segs)
	}
	checkContiguous(t, segs)
	var total int64
	for i, s := range segs {
		total += s.DurationMS
		if s.Width != 320 || s.Height != 240 {
			t.Errorf("segment %d: %dx%d, want 320x240", i, s.Width, s.Height)
		}
		if i < len(segs)-1 && (s.DurationMS < 2000 || s.DurationMS > 3000) {
			t.Errorf("segment %d: %d ms, want 2 s up to one GOP more", i, s.DurationMS)
		}
		dur, _ := probe(t, g.segmentFile(t, "cam1-main", s))
		if d := dur*1000 - float64(s.DurationMS); d < -300 || d > 300 {
			t.Errorf("segment %d: ffprobe %.3f s, index %d ms", i, dur, s.DurationMS)
		}
	}
	if total < 6700 || total > 7200 {
		t.Errorf("recorded %d ms of 7 s", total)
	}
	// Receive clock 1 min ago: the first segment starts near t0.
	if d := segs[0].Start - t0.UnixMilli(); d < -200 || d > 200 {
		t.Errorf("first segment starts %d ms from the first packet", d)
	}
	if n := value(g.rec.m.segments.WithLabelValues("stored")); int(n) != len(segs) {
		t.Errorf("stored metric %v, want %d", n, len(segs))
	}
	if value(g.rec.m.aboveTierSegs) != 0 {
		t.Error("320x240 counted above a 640x480 plan")
	}
	ents, _ := filepath.Glob(filepath.Join(g.rec.cfg.SpoolDir, "*", "*"))
	if len(ents) != 0 {
		t.Errorf("spool not empty after upload: %v", ents)
	}
}

func value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("VIGIL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

func TestRecordH265WithOpus(t *testing.T) {
	vtestutil.RequireBinary(t, "ffprobe")
	src := makeSource(t, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "5", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", "-g", "25", "-c:a", "libopus")
	g := newRig(t, 2*time.Second)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	publish(t, g, "cam1-main", src, t0, src.packets()).Close(nil)
	g.rec.uploads.Wait()
	segs := g.segments(t, "cam1-main")
	if len(segs) < 2 {
		t.Fatalf("%d segments: %+v", len(segs), segs)
	}
	checkContiguous(t, segs)
	for i, s := range segs {
		if s.Width != 320 || s.Height != 240 {
			t.Errorf("segment %d: %dx%d", i, s.Width, s.Height)
		}
		probe(t, g.segmentFile(t, "cam1-main", s))
	}
}
