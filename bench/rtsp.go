package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"golang.org/x/sync/errgroup"

	"github.com/vigilcloud/vigil/ingest/rtsp"
	"github.com/vigilcloud/vigil/internal/servers"
	"github.com/vigilcloud/vigil/media/avc"
)

// RTSPConfig sets up `vigil bench rtsp`.
type RTSPConfig struct {
	VigilBin string // runs `vigil serve` (recording) and `vigil bench rtsp-sink` (baseline)
	WorkDir  string
	Streams  []int         // concurrent publishers per case
	Duration time.Duration // measured window per case (after Warmup)
	// Warmup precedes the window: long enough (segment duration plus the
	// publishers' 2-s start spread) that every stream's first segment, and
	// with it the one-off creation of its directories, is stored before
	// the window opens, so the window shows steady recording. 0: 10 s.
	Warmup time.Duration
	Runs   int // repetitions; medians are reported
	Log    *slog.Logger
	// ServeArgs are extra `vigil serve` flags (e.g. --debug-addr to profile the recording node).
	ServeArgs []string
}

// rtspStats is one measured side of one case.
type rtspStats struct {
	cpuSeconds   float64 // process CPU (user+system) over the window
	windowPkts   int64   // RTP packets the server counted over the window
	peakRSS      int64   // VmHWM during the case
	idleRSS      int64   // VmRSS before the publishers connected
	sent, recv   int64   // RTP packets
	failed       int64   // publishers that could not start or broke off
	maxLag       time.Duration
	window       time.Duration
	mbitsPerSess float64
}

// RunRTSP publishes N concurrent 2 Mbit/s H.264 streams (own RTSP client,
// TCP interleaved, a recorded file replayed in real time) into a `vigil
// serve` on the fs backend and into a baseline process whose sinks only
// count packets, and compares their CPU, peak RSS and packet loss.
func RunRTSP(ctx context.Context, cfg RTSPConfig) ([]Metric, error) {
	log := cfg.Log
	frames, bitrate, err := loadBenchH264(ctx, cfg.WorkDir)
	if err != nil {
		return nil, err
	}
	log.Info("bench rtsp: source", "frames", len(frames.aus), "mbit_per_s", round(bitrate/1e6))
	floor, err := recordingFloor(cfg.WorkDir, frames, 20, 60)
	if err != nil {
		return nil, fmt.Errorf("bench rtsp: floor: %w", err)
	}
	log.Info("bench rtsp: recording floor", "us_cpu_per_packet", round(floor))
	out := []Metric{{Metric: "recording floor per RTP packet (copy, SHA-256, write, fsync and link per segment; no RTSP)", Unit: "us CPU", Value: round(floor)}}
	for _, n := range cfg.Streams {
		var rec, base []rtspStats
		for run := 0; run < cfg.Runs; run++ {
			b, err := runRTSPCase(ctx, cfg, frames, n, false)
			if err != nil {
				return nil, fmt.Errorf("bench rtsp: baseline N=%d: %w", n, err)
			}
			base = append(base, b)
			r, err := runRTSPCase(ctx, cfg, frames, n, true)
			if err != nil {
				return nil, fmt.Errorf("bench rtsp: recording N=%d: %w", n, err)
			}
			rec = append(rec, r)
			log.Info("bench rtsp: run", "streams", n, "run", run+1,
				"cpu_rec", round(r.cpuSeconds), "cpu_base", round(b.cpuSeconds),
				"peak_rss_rec_mib", round(float64(r.peakRSS)/(1<<20)), "peak_rss_base_mib", round(float64(b.peakRSS)/(1<<20)),
				"lost_rec", r.sent-r.recv, "lost_base", b.sent-b.recv, "failed", r.failed+b.failed,
				"max_lag_ms", ms(max(r.maxLag, b.maxLag)))
		}
		out = append(out, rtspMetrics(n, medianRTSP(rec), medianRTSP(base), floor)...)
	}
	return out, nil
}

func rtspMetrics(n int, r, b rtspStats, floor float64) []Metric {
	perSess := func(s rtspStats) float64 { return s.cpuSeconds / float64(n) / s.window.Seconds() * 1000 }
	cpuR, cpuB := perSess(r), perSess(b)
	ratio := 0.0
	if cpuB > 0 {
		ratio = round(cpuR / cpuB)
	}
	// CPU per packet received holds when the machine cannot keep every
	// publisher in real time (the two processes then see different rates).
	perPkt := func(s rtspStats) float64 {
		if s.windowPkts == 0 {
			return 0
		}
		return s.cpuSeconds / float64(s.windowPkts) * 1e6
	}
	pktR, pktB := perPkt(r), perPkt(b)
	pktRatio := 0.0
	if pktB > 0 {
		pktRatio = round(pktR / pktB)
	}
	cpuMet := pktRatio > 0 && pktRatio <= 1.5
	rssPer := func(s rtspStats) float64 { return float64(max(s.peakRSS-s.idleRSS, 0)) / float64(n) / 1024 }
	// The goal allows one buffered fragment per session on top of 1 MiB:
	// a second of video at the measured rate.
	fragKiB := r.mbitsPerSess * 1e6 / 8 / 1024
	rssGoal := 1024 + fragKiB
	rssMet := rssPer(r) < rssGoal
	lossR, lossB := float64(r.sent-r.recv), float64(b.sent-b.recv)
	lossMet := lossR == 0 && r.failed == 0
	pfx := fmt.Sprintf("N=%d ", n)
	ms := []Metric{
		{Metric: pfx + "CPU per RTP packet (recording vs baseline)", Unit: "us CPU", Value: round(pktR), Baseline: round(pktB),
			Ratio: pktRatio, Goal: "<= 1.5x", Met: &cpuMet},
		{Metric: pfx + "lowest ratio the floor allows ((baseline + floor) / baseline)", Unit: "x", Value: floorRatio(pktB, floor)},
		{Metric: pfx + "CPU per session (recording vs baseline)", Unit: "ms CPU/s", Value: round(cpuR), Baseline: round(cpuB), Ratio: ratio},
		{Metric: pfx + "peak RSS per session (recording)", Unit: "KiB", Value: round(rssPer(r)), Baseline: round(rssPer(b)),
			Goal: fmt.Sprintf("< %.0f KiB (1 MiB + 1 s fragment)", rssGoal), Met: &rssMet},
		{Metric: pfx + "peak RSS of the process (recording)", Unit: "MiB", Value: round(float64(r.peakRSS) / (1 << 20)), Baseline: round(float64(b.peakRSS) / (1 << 20))},
		{Metric: pfx + "RTP packets lost (recording)", Unit: "packets", Value: lossR, Baseline: lossB},
		{Metric: pfx + "RTP packets sent (recording)", Unit: "packets", Value: float64(r.sent), Baseline: float64(b.sent)},
		{Metric: pfx + "publishers failed (recording)", Unit: "sessions", Value: float64(r.failed), Baseline: float64(b.failed)},
		{Metric: pfx + "publisher max lag behind real time", Unit: "ms", Value: ms(r.maxLag), Baseline: ms(b.maxLag)},
	}
	if n == 200 {
		ms[5].Goal, ms[5].Met = "0", &lossMet
	}
	return ms
}

func floorRatio(baseline, floor float64) float64 {
	if baseline <= 0 {
		return 0
	}
	return round((baseline + floor) / baseline)
}

func medianRTSP(runs []rtspStats) rtspStats {
	pick := func(f func(rtspStats) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	// CPU per window second, so runs with slightly different windows compare.
	cps := pick(func(s rtspStats) float64 { return s.cpuSeconds / s.window.Seconds() })
	return rtspStats{
		cpuSeconds:   cps,
		windowPkts:   int64(pick(func(s rtspStats) float64 { return float64(s.windowPkts) / s.window.Seconds() })),
		window:       time.Second,
		peakRSS:      int64(pick(func(s rtspStats) float64 { return float64(s.peakRSS) })),
		idleRSS:      int64(pick(func(s rtspStats) float64 { return float64(s.idleRSS) })),
		sent:         int64(pick(func(s rtspStats) float64 { return float64(s.sent) })),
		recv:         int64(pick(func(s rtspStats) float64 { return float64(s.recv) })),
		failed:       int64(pick(func(s rtspStats) float64 { return float64(s.failed) })),
		maxLag:       time.Duration(pick(func(s rtspStats) float64 { return float64(s.maxLag) })),
		mbitsPerSess: pick(func(s rtspStats) float64 { return s.mbitsPerSess }),
	}
}

// benchH264 is the replayed stream: RTP payloads of each access unit.
type benchH264 struct {
	aus      [][][]byte
	sps, pps []byte
}

const benchFPS = 25

// loadBenchH264 records 10 s of 720p H.264 at 2 Mbit/s (no B-frames, so RTP
// timestamps are decode order; a GOP of 2 s) once, cached under dir, and
// packetizes it with pion's H264Payloader.
func loadBenchH264(ctx context.Context, dir string) (*benchH264, float64, error) {
	path := filepath.Join(dir, "bench-2mbit.h264")
	if _, err := os.Stat(path); err != nil {
		tmp := path + ".tmp"
		out, err := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
			"-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-t", "10",
			"-c:v", "libx264", "-preset", "veryfast", "-b:v", "2M", "-maxrate", "2M", "-bufsize", "2M",
			"-g", "50", "-bf", "0", "-bsf:v", "h264_metadata=aud=insert", "-f", "h264", tmp).CombinedOutput()
		if err != nil {
			return nil, 0, fmt.Errorf("bench rtsp: ffmpeg: %v: %s", err, out)
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, 0, err
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	b := &benchH264{}
	b.aus, b.sps, b.pps = PacketizeH264(raw)
	if len(b.aus) < benchFPS || b.sps == nil || b.pps == nil {
		return nil, 0, fmt.Errorf("bench rtsp: %s: %d access units, sps %v pps %v", path, len(b.aus), b.sps != nil, b.pps != nil)
	}
	return b, float64(len(raw)*8) / (float64(len(b.aus)) / benchFPS), nil
}

func (b *benchH264) media() rtsp.Media {
	return rtsp.Media{Type: "video", Codec: "H264", PayloadType: 96, ClockRate: 90000, Fmtp: map[string]string{
		"packetization-mode":   "1",
		"sprop-parameter-sets": base64.StdEncoding.EncodeToString(b.sps) + "," + base64.StdEncoding.EncodeToString(b.pps),
		"profile-level-id":     hex.EncodeToString(b.sps[1:4]),
	}}
}

// rtspTarget is a process under test with an RTSP address and /metrics.
type rtspTarget struct {
	proc       *servers.Process
	rtspAddr   string
	httpBase   string
	token      string // bearer for /metrics
	user, pass string
	streams    []string
}

const benchSinkPassword = "bench"

func runRTSPCase(ctx context.Context, cfg RTSPConfig, src *benchH264, n int, recording bool) (rtspStats, error) {
	name := "sink"
	if recording {
		name = "rec"
	}
	dir := mkdir(cfg.WorkDir, fmt.Sprintf("rtsp-%s-%d-%d", name, n, time.Now().UnixNano()))
	defer os.RemoveAll(dir)
	var t *rtspTarget
	var err error
	if recording {
		t, err = startRecordingTarget(ctx, cfg, dir, n)
	} else {
		t, err = startSinkTarget(ctx, cfg, dir, n)
	}
	if err != nil {
		return rtspStats{}, err
	}
	defer t.proc.Close()
	pid := t.proc.Pid()
	idle, _ := procStatusKB(pid, "VmRSS:")
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)

	clients, failed := dialPublishers(ctx, t, src, cfg.Log)

	warmup := cfg.Warmup
	if warmup <= 0 {
		warmup = 10 * time.Second
	}
	start := time.Now().Add(100 * time.Millisecond)
	end := start.Add(warmup + cfg.Duration)
	var sent atomic.Int64
	var lagMu sync.Mutex
	var maxLag time.Duration
	var wg sync.WaitGroup
	for i, c := range clients {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			lag, err := publishBench(c, src, i, start, end, &sent, nil)
			lagMu.Lock()
			maxLag = max(maxLag, lag)
			lagMu.Unlock()
			if err != nil {
				failed.Add(1)
				cfg.Log.Warn("bench rtsp: publisher broke off", "stream", t.streams[i], "err", err)
			}
		}()
	}
	// The window starts after the warm-up, when every publisher is sending.
	time.Sleep(time.Until(start.Add(warmup)))
	r0, err := t.received(ctx)
	if err != nil {
		return rtspStats{}, err
	}
	cpu0, err := procCPUSeconds(pid)
	if err != nil {
		return rtspStats{}, err
	}
	w0 := time.Now()
	time.Sleep(time.Until(end))
	cpu1, err := procCPUSeconds(pid)
	if err != nil {
		return rtspStats{}, err
	}
	window := time.Since(w0)
	r1, err := t.received(ctx)
	if err != nil {
		return rtspStats{}, err
	}
	wg.Wait()
	// Everything sent has been written to the sockets; wait until the
	// server's count settles.
	var recv int64
	for deadline, last, stable := time.Now().Add(15*time.Second), int64(-1), 0; time.Now().Before(deadline); {
		if recv, err = t.received(ctx); err != nil {
			return rtspStats{}, err
		}
		if recv >= sent.Load() {
			break
		}
		if recv == last {
			if stable++; stable >= 10 {
				break
			}
		} else {
			stable = 0
		}
		last = recv
		time.Sleep(100 * time.Millisecond)
	}
	peak, _ := procStatusKB(pid, "VmHWM:")
	for _, c := range clients {
		if c != nil {
			tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_ = c.Teardown(tctx)
			cancel()
			c.Close()
		}
	}
	var bytesPerSec float64
	for _, au := range src.aus {
		for _, p := range au {
			bytesPerSec += float64(len(p) + 12)
		}
	}
	bytesPerSec = bytesPerSec / float64(len(src.aus)) * benchFPS
	return rtspStats{cpuSeconds: cpu1 - cpu0, windowPkts: r1 - r0, window: window, peakRSS: peak * 1024, idleRSS: idle * 1024,
		sent: sent.Load(), recv: recv, failed: failed.Load(), maxLag: maxLag, mbitsPerSess: bytesPerSec * 8 / 1e6}, nil
}

// dialPublishers connects one publisher per stream of t (ANNOUNCE, SETUP,
// RECORD), 32 at a time, before any sends; a nil client did not start.
func dialPublishers(ctx context.Context, t *rtspTarget, src *benchH264, log *slog.Logger) ([]*rtsp.Client, *atomic.Int64) {
	clients := make([]*rtsp.Client, len(t.streams))
	var g errgroup.Group
	g.SetLimit(32)
	var failed atomic.Int64
	for i := range t.streams {
		g.Go(func() error {
			c, err := rtsp.Dial(ctx, fmt.Sprintf("rtsp://%s:%s@%s/%s", t.user, t.pass, t.rtspAddr, t.streams[i]))
			if err == nil {
				err = c.Announce(ctx, []rtsp.Media{src.media()})
				if err == nil {
					err = c.Setup(ctx, 0, true)
				}
				if err == nil {
					err = c.Record(ctx)
				}
				if err != nil {
					c.Close()
				}
			}
			if err != nil {
				failed.Add(1)
				log.Warn("bench: publisher did not start", "stream", t.streams[i], "err", err)
				return nil
			}
			clients[i] = c
			return nil
		})
	}
	_ = g.Wait()
	return clients, &failed
}

// publishBench replays src on c at 25 fps from start (plus a per-stream
// offset, so keyframes do not line up) until end, sending each access
// unit's packets in one write. onFrame, if set, is told when frame f is
// sent. It returns how far it fell behind.
func publishBench(c *rtsp.Client, src *benchH264, i int, start, end time.Time, sent *atomic.Int64, onFrame func(f int, at time.Time)) (time.Duration, error) {
	r := rand.New(rand.NewPCG(uint64(i), 42))
	seq, ts, ssrc := uint16(r.Uint32()), r.Uint32(), r.Uint32()
	next := start.Add(time.Duration(r.Int64N(int64(2 * time.Second))))
	var maxLag time.Duration
	pkts := make([]*rtp.Packet, 0, 64)
	pool := make([]rtp.Packet, 0, 64)
	srEvery := 0
	for f := 0; ; f++ {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		} else {
			maxLag = max(maxLag, -d)
		}
		if time.Now().After(end) {
			return maxLag, nil
		}
		au := src.aus[f%len(src.aus)]
		pkts, pool = pkts[:0], pool[:0]
		for j, p := range au {
			pool = append(pool, rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq,
				Timestamp: ts, SSRC: ssrc, Marker: j == len(au)-1}, Payload: p})
			seq++
		}
		for k := range pool {
			pkts = append(pkts, &pool[k])
		}
		if onFrame != nil {
			onFrame(f, time.Now())
		}
		if err := c.WritePackets(0, pkts); err != nil {
			return maxLag, err
		}
		sent.Add(int64(len(pkts)))
		if srEvery++; srEvery == benchFPS*5 { // a sender report every 5 s, as ffmpeg does
			srEvery = 0
			now := time.Now()
			sr := &rtcp.SenderReport{SSRC: ssrc, NTPTime: ntpTime(now), RTPTime: ts}
			if err := c.WriteRTCP(0, []rtcp.Packet{sr}); err != nil {
				return maxLag, err
			}
		}
		ts += 90000 / benchFPS
		next = next.Add(time.Second / benchFPS)
	}
}

func ntpTime(t time.Time) uint64 {
	const ntpEpochOffset = 2208988800
	s := uint64(t.Unix()) + ntpEpochOffset
	frac := uint64(t.Nanosecond()) << 32 / 1e9
	return s<<32 | frac
}

// startSinkTarget runs `vigil bench rtsp-sink`: the same RTSP server with
// sinks that only count.
func startSinkTarget(ctx context.Context, cfg RTSPConfig, dir string, n int) (*rtspTarget, error) {
	httpAddr, err := servers.FreePort()
	if err != nil {
		return nil, err
	}
	rtspAddr, err := servers.FreePort()
	if err != nil {
		return nil, err
	}
	p, err := servers.Start(cfg.VigilBin, dir, httpAddr, nil, "bench", "rtsp-sink",
		"--rtsp-addr", rtspAddr, "--http-addr", httpAddr, "--max-sessions", strconv.Itoa(n+10))
	if err != nil {
		return nil, err
	}
	if err := servers.WaitTCP(ctx, rtspAddr, 30*time.Second); err != nil {
		p.Close()
		return nil, fmt.Errorf("rtsp-sink did not start: %w\n%s", err, p.Logs())
	}
	t := &rtspTarget{proc: p, rtspAddr: rtspAddr, httpBase: "http://" + httpAddr, user: "bench-bridge", pass: benchSinkPassword}
	for i := range n {
		t.streams = append(t.streams, fmt.Sprintf("s%d", i))
	}
	return t, nil
}

// startRecordingTarget runs `vigil serve` on the fs backend with RTSP, one
// bridge and a camera with n streams.
func startRecordingTarget(ctx context.Context, cfg RTSPConfig, dir string, n int) (*rtspTarget, error) {
	var addrs [3]string
	for i := range addrs {
		a, err := servers.FreePort()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	httpAddr, raftAddr, rtspAddr := addrs[0], addrs[1], addrs[2]
	args := append([]string{"serve", "--data", filepath.Join(dir, "data"), "--http-addr", httpAddr, "--raft-addr", raftAddr,
		"--rtsp-addr", rtspAddr, "--rtsp-udp-addr", "off", "--rtsp-max-sessions", strconv.Itoa(n + 10), "--log-level", "warn",
		"--rtsp-max-unauthenticated-per-ip", "64"}, // every publisher connects from loopback, 32 at a time
		cfg.ServeArgs...)
	p, err := servers.Start(cfg.VigilBin, dir, httpAddr, []string{"VIGIL_ADMIN_TOKEN=" + benchToken}, args...)
	if err != nil {
		return nil, err
	}
	node := &benchNode{Process: p, base: "http://" + httpAddr, token: benchToken}
	if err := node.waitReady(ctx); err != nil {
		p.Close()
		return nil, err
	}
	fail := func(err error) (*rtspTarget, error) { p.Close(); return nil, err }
	if err := node.call(ctx, "POST", "/v1/accounts", map[string]any{"id": "bench", "name": "bench"}); err != nil {
		return fail(err)
	}
	var br struct {
		Token string `json:"token"`
	}
	if err := node.callJSON(ctx, "POST", "/v1/accounts/bench/bridges", map[string]any{"id": "bench-bridge", "name": "bench"}, &br); err != nil {
		return fail(err)
	}
	if br.Token == "" {
		return fail(errors.New("bench rtsp: bridge created without a token"))
	}
	t := &rtspTarget{proc: p, rtspAddr: rtspAddr, httpBase: node.base, token: benchToken, user: "bench-bridge", pass: br.Token}
	// A camera has at most 64 streams.
	for cam := 0; cam*64 < n; cam++ {
		var streams []map[string]any
		for i := cam * 64; i < min(n, (cam+1)*64); i++ {
			id := fmt.Sprintf("cam%d-s%d", cam, i)
			t.streams = append(t.streams, id)
			streams = append(streams, map[string]any{"id": id, "width": 1280, "height": 720, "retention_days": 30})
		}
		camID := fmt.Sprintf("cam%d", cam)
		if err := node.call(ctx, "POST", "/v1/bridges/bench-bridge/cameras", map[string]any{"id": camID, "name": camID, "streams": streams}); err != nil {
			return fail(err)
		}
	}
	return t, nil
}

// received sums vigil_rtsp_packets_received_total{kind="rtp"} from /metrics.
func (t *rtspTarget) received(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", t.httpBase+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	if t.token != "" {
		req.Header.Set("Authorization", "Bearer "+t.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var total float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "vigil_rtsp_packets_received_total{") && strings.Contains(line, `kind="rtp"`) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err == nil {
				total += v
			}
		}
	}
	return int64(total), sc.Err()
}

// procCPUSeconds is a process's user+system CPU time from /proc/PID/stat.
func procCPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 of the whole line.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("bench: malformed /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("bench: short /proc/PID/stat")
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("bench: bad utime/stime in /proc/PID/stat")
	}
	const clkTck = 100 // USER_HZ on Linux
	return (ut + st) / clkTck, nil
}

func procStatusKB(pid int, key string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key) {
			var kb int64
			_, err := fmt.Sscanf(strings.TrimPrefix(line, key), "%d", &kb)
			return kb, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", key, pid)
}

// CountingHandler is the baseline's Handler: any bridge id with the
// password "bench" may publish any path, and sinks only count packets.
type CountingHandler struct {
	Packets, Bytes atomic.Int64
}

// CheckPassword accepts the bench password.
func (h *CountingHandler) CheckPassword(_ context.Context, _, password string) error {
	if password != benchSinkPassword {
		return rtsp.ErrUnauthorized
	}
	return nil
}

// DigestHA1 is MD5(user:realm:bench).
func (h *CountingHandler) DigestHA1(_ context.Context, user, realm string) (string, error) {
	s := md5.Sum([]byte(user + ":" + realm + ":" + benchSinkPassword))
	return hex.EncodeToString(s[:]), nil
}

// Announce returns a counting sink.
func (h *CountingHandler) Announce(context.Context, string, string, []rtsp.Media) (rtsp.Sink, error) {
	return countingSink{h}, nil
}

type countingSink struct{ h *CountingHandler }

func (s countingSink) WriteRTP(_ int, pkt *rtp.Packet, _ time.Time) error {
	s.h.Packets.Add(1)
	s.h.Bytes.Add(int64(len(pkt.Payload)))
	return nil
}
func (s countingSink) WriteRTCP(int, []rtcp.Packet) {}
func (s countingSink) Close(error)                  {}

// PacketizeH264 splits an Annex B H.264 stream whose access units begin with
// a delimiter (ffmpeg's h264_metadata=aud=insert) into access units, each as
// the RTP payloads of pion's H264Payloader (1200-byte MTU), and returns the
// first SPS and PPS.
func PacketizeH264(raw []byte) (aus [][][]byte, sps, pps []byte) {
	var au [][]byte
	flush := func() {
		if len(au) == 0 {
			return
		}
		var annexB []byte
		for _, n := range au {
			annexB = append(append(annexB, 0, 0, 0, 1), n...)
		}
		aus = append(aus, (&codecs.H264Payloader{}).Payload(1200, annexB))
		au = nil
	}
	for _, nal := range avc.SplitAnnexB(raw) {
		switch nal[0] & 0x1f {
		case 9: // access unit delimiter: the previous one is complete
			flush()
			continue
		case 7:
			if sps == nil {
				sps = nal
			}
		case 8:
			if pps == nil {
				pps = nal
			}
		}
		au = append(au, nal)
	}
	flush()
	return aus, sps, pps
}
