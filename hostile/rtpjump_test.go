package hostile

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"github.com/vigilcloud/vigil/bench"
	"github.com/vigilcloud/vigil/ingest/rtsp"
	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/internal/vigiltest"
)

// TestRTPTimestampJump publishes 12 s of valid H.264 over RTSP whose RTP
// timestamps jump by +2·10⁹ ticks after frame 200, as an encoder restart
// can do, with sender reports placing it 30 s in the past (before and
// after the jump, as the encoder's clock runs on). Every stored segment
// must be no longer than an upload may be, start no later than now, play
// in ffprobe and ffmpeg, and the recorder's spool backlog must empty:
// before the fix one segment of 22,224,262 ms was written, refused by the
// index and retried every 10 s forever, and the segments after it were
// placed 6 h in the future.
func TestRTPTimestampJump(t *testing.T) {
	testutil.RequireBinary(t, "ffmpeg")
	testutil.RequireBinary(t, "ffprobe")
	const fps, frames, jumpAfter = 25, 300, 200
	aus, sps, pps := h264AccessUnits(t, frames/fps, fps)

	n := vigiltest.Start(t, vigilBin, vigiltest.Options{RTSP: true, Args: []string{"--segment-duration", "2s"}})
	tok := n.Provision("s1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := rtsp.Dial(ctx, fmt.Sprintf("rtsp://br:%s@%s/s1", tok, n.RTSPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	media := rtsp.Media{Type: "video", Codec: "H264", PayloadType: 96, ClockRate: 90000, Fmtp: map[string]string{
		"packetization-mode":   "1",
		"sprop-parameter-sets": base64.StdEncoding.EncodeToString(sps) + "," + base64.StdEncoding.EncodeToString(pps)}}
	if err := c.Announce(ctx, []rtsp.Media{media}); err != nil {
		t.Fatal(err)
	}
	if err := c.Setup(ctx, 0, true); err != nil {
		t.Fatal(err)
	}
	if err := c.Record(ctx); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	wall0 := began.Add(-30 * time.Second) // the camera's clock for frame 0
	ts, seq := uint32(123456789), uint16(1000)
	for f := range frames {
		if f == jumpAfter {
			ts += 2_000_000_000
		}
		if f%50 == 0 || f == jumpAfter { // sender reports as the encoder's clock runs
			at := wall0.Add(time.Duration(f) * time.Second / fps)
			sr := &rtcp.SenderReport{SSRC: 1, RTPTime: ts, NTPTime: ntpTime(at)}
			if err := c.WriteRTCP(0, []rtcp.Packet{sr}); err != nil {
				t.Fatal(err)
			}
		}
		var pkts []*rtp.Packet
		for j, p := range aus[f] {
			pkts = append(pkts, &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: ts, SSRC: 1,
				Marker: j == len(aus[f])-1}, Payload: p})
			seq++
		}
		if err := c.WritePackets(0, pkts); err != nil {
			t.Fatal(err)
		}
		ts += 90000 / fps
		time.Sleep(2 * time.Millisecond) // faster than real time: the reports place it
	}
	if err := c.Teardown(ctx); err != nil {
		t.Fatal(err)
	}

	// Everything recorded is stored: the backlog empties (bounded wait).
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, ok := metric(t, n, "vigil_recorder_spool_backlog")
		s, _ := metric(t, n, "vigil_recorder_sessions")
		if ok && b == 0 && s == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vigil_recorder_spool_backlog %v (sessions %v) 20 s after the teardown, want 0", b, s)
		}
		time.Sleep(100 * time.Millisecond)
	}

	var recs struct {
		Segments []struct {
			Start      int64 `json:"start"`
			DurationMS int64 `json:"duration_ms"`
		} `json:"segments"`
	}
	from, to := began.Add(-2*time.Hour).UnixMilli(), began.Add(24*time.Hour).UnixMilli()
	n.Must(n.API.Do(ctx, "GET", fmt.Sprintf("/v1/streams/s1/recordings?start=%d&end=%d", from, to), nil, &recs))
	if len(recs.Segments) < 5 {
		t.Fatalf("%d segments recorded of 12 s cut every 2 s: %+v", len(recs.Segments), recs.Segments)
	}
	var total int64
	now := time.Now().UnixMilli()
	for i, s := range recs.Segments {
		total += s.DurationMS
		if s.DurationMS <= 0 || s.DurationMS > (10*time.Minute).Milliseconds() {
			t.Errorf("segment %d at %d: %d ms, not within an upload's 10 min", i, s.Start, s.DurationMS)
		}
		if s.Start > now {
			t.Errorf("segment %d starts %s in the future", i, time.UnixMilli(s.Start).Sub(time.UnixMilli(now)))
		}
		probeSegment(t, n, s.Start)
	}
	// 300 frames of 40 ms; the jump is taken out, not recorded as time.
	if total < 11_000 || total > 12_000 {
		t.Errorf("%d ms recorded, want about the 12 s sent", total)
	}
}

// h264AccessUnits encodes seconds of testsrc2 (320x240, a keyframe every
// second, no B-frames) and returns each access unit as RTP payloads
// (pion's H264Payloader), and the SPS and PPS.
func h264AccessUnits(t *testing.T, seconds, fps int) (aus [][][]byte, sps, pps []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "src.h264")
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=320x240:rate=%d", fps), "-t", strconv.Itoa(seconds),
		"-c:v", "libx264", "-preset", "ultrafast", "-g", strconv.Itoa(fps), "-bf", "0",
		"-bsf:v", "h264_metadata=aud=insert", "-f", "h264", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	aus, sps, pps = bench.PacketizeH264(raw)
	if len(aus) != seconds*fps || sps == nil || pps == nil {
		t.Fatalf("%d access units (want %d), sps %v, pps %v", len(aus), seconds*fps, sps != nil, pps != nil)
	}
	return aus, sps, pps
}

func ntpTime(t time.Time) uint64 {
	const ntpToUnix = 2208988800
	return uint64(t.Unix()+ntpToUnix)<<32 | uint64(t.Nanosecond())<<32/1e9
}

// metric reads an unlabelled sample from the node's /metrics.
func metric(t *testing.T, n *vigiltest.Node, name string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(n.Base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// probeSegment fetches one stored segment and has ffprobe and ffmpeg read
// and decode it whole, without a complaint.
func probeSegment(t *testing.T, n *vigiltest.Node, start int64) {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/v1/streams/s1/segments/%d", n.Base, start), nil)
	req.Header.Set("Authorization", "Bearer "+vigiltest.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("segment %d: %d %v %s", start, resp.StatusCode, err, b[:min(len(b), 200)])
	}
	p := filepath.Join(t.TempDir(), strconv.FormatInt(start, 10)+".mp4")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", p).CombinedOutput(); err != nil || bytes.Contains(out, []byte("rror")) {
		t.Errorf("ffprobe segment %d: %v\n%s", start, err, out)
	}
	if out, err := exec.Command("ffmpeg", "-v", "error", "-i", p, "-f", "null", "-").CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("ffmpeg decode of segment %d: %v\n%s", start, err, out)
	}
}
