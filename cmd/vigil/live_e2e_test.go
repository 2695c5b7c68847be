package main

import (
	"context"
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

	"github.com/vigilcloud/vigil/internal/testutil"
)

// TestLiveWindow plays live.m3u8 with ffmpeg, as a player joining a live
// stream does, for a stream uploaded over HTTP and one recorded over
// RTSP: every frame stored in the window decodes, with no errors.
func TestLiveWindow(t *testing.T) {
	testutil.RequireBinary(t, "ffmpeg")
	testutil.RequireBinary(t, "ffprobe")
	addr := testutil.FreePort(t)
	v := startVigil(t, nil, "--rtsp-addr", addr, "--rtsp-udp-addr", "off", "--segment-duration", "2s")
	n := &rtspNode{vigilNode: v, rtsp: addr, token: v.provision("up", "rt")}

	t.Run("HTTP", func(t *testing.T) {
		// Four 2-s fMP4 segments whose decode times run on, as a Bridge
		// cuts them, uploaded as if just recorded.
		segs := ffmpegHLSSegments(t, 4)
		start := time.Now().Add(-10 * time.Second).UnixMilli()
		for i, b := range segs {
			if code, body := n.node.Put(n.token, "up", start+int64(i)*2000, b, "video/mp4"); code != 201 {
				t.Fatalf("upload %d: %d %s", i, code, body)
			}
		}
		frames := playLive(t, n.base+"/v1/streams/up/live.m3u8", 4*50)
		if frames != 4*50 {
			t.Errorf("live.m3u8 of the uploads decodes to %d frames, want %d", frames, 4*50)
		}
	})

	t.Run("RTSP", func(t *testing.T) {
		cmd := n.publish(t, "br", n.token, "rt", append(h264Args("320x240", 8, 25), "-rtsp_transport", "tcp")...)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("ffmpeg publish: %v", err)
		}
		rec := n.checkedSegments(t, "rt", 7_000)
		want := 0
		for _, s := range rec.Segments {
			want += countFrames(t, n.base+s.URL)
		}
		if got := playLive(t, n.base+"/v1/streams/rt/live.m3u8", want); got != want {
			t.Errorf("live.m3u8 of the RTSP recording decodes to %d frames, the segments hold %d", got, want)
		}
	})
}

// ffmpegHLSSegments encodes n 2-s segments of 320x240 H.264 at 25 fps
// with ffmpeg's HLS muxer and returns each as a self-contained fMP4 (the
// init section, then the fragments).
func ffmpegHLSSegments(t *testing.T, n int) [][]byte {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", strconv.Itoa(2*n),
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p",
		"-f", "hls", "-hls_time", "2", "-hls_segment_type", "fmp4", "-hls_playlist_type", "vod",
		"-hls_segment_filename", filepath.Join(dir, "s%d.m4s"), filepath.Join(dir, "x.m3u8")).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg hls: %v\n%s", err, out)
	}
	init, err := os.ReadFile(filepath.Join(dir, "init.mp4"))
	must(t, err)
	segs := make([][]byte, n)
	for i := range n {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("s%d.m4s", i)))
		must(t, err)
		segs[i] = append(append([]byte(nil), init...), b...)
	}
	return segs
}

// playLive has ffmpeg join the live playlist at url from its first entry
// and remux frames frames (it would wait for more; a decoder would hold
// its last frames back until the end), then decodes what it got and
// returns how many frames that is; any error fails the test.
func playLive(t *testing.T, url string, frames int) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := filepath.Join(t.TempDir(), "live.mp4")
	out, err := exec.CommandContext(ctx, "ffmpeg", "-v", "error", "-nostdin", "-headers", "Authorization: Bearer "+e2eToken+"\r\n",
		"-live_start_index", "0", "-i", url, "-c", "copy", "-frames:v", strconv.Itoa(frames), "-y", f).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("ffmpeg -i %s: %v\n%s", url, err, out)
	}
	return decodeFrames(t, f)
}

// decodeFrames counts the video frames ffmpeg decodes from the file f,
// failing on any decode error.
func decodeFrames(t *testing.T, f string) int {
	t.Helper()
	cmd := exec.Command("ffmpeg", "-v", "error", "-nostdin", "-i", f, "-f", "framemd5", "-")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(stderr.String()) != "" {
		t.Fatalf("ffmpeg decode %s: %v\n%s", f, err, stderr.String())
	}
	n := 0
	for _, l := range strings.Split(string(out), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			n++
		}
	}
	return n
}

// countFrames counts the video frames ffmpeg decodes from the segment at
// url (fetched with the operator token), failing on any decode error.
func countFrames(t *testing.T, url string) int {
	t.Helper()
	f := filepath.Join(t.TempDir(), "seg.mp4")
	must(t, os.WriteFile(f, []byte(getOK(t, url)), 0o644))
	return decodeFrames(t, f)
}

// llPlaylist is what a test reads of an LL-HLS playlist.
type llPlaylist struct {
	body     string
	seq      int64
	segs     []llSegment
	hint     string
	partInf  bool
	blocking bool
}

type llSegment struct {
	init  string   // the EXT-X-MAP in force
	parts []string // part URIs listed
	media string   // the segment's URI once closed
}

func parseLL(t *testing.T, body string) llPlaylist {
	t.Helper()
	pl := llPlaylist{body: body}
	attr := func(l, name string) string {
		_, v, ok := strings.Cut(l, name+"=\"")
		if !ok {
			t.Fatalf("no %s in %q", name, l)
		}
		v, _, _ = strings.Cut(v, "\"")
		return v
	}
	init := ""
	cur := llSegment{}
	for _, l := range strings.Split(body, "\n") {
		switch {
		case strings.HasPrefix(l, "#EXT-X-MEDIA-SEQUENCE:"):
			n, err := strconv.ParseInt(strings.TrimPrefix(l, "#EXT-X-MEDIA-SEQUENCE:"), 10, 64)
			must(t, err)
			pl.seq = n
		case strings.HasPrefix(l, "#EXT-X-SERVER-CONTROL:"):
			pl.blocking = strings.Contains(l, "CAN-BLOCK-RELOAD=YES") && strings.Contains(l, "PART-HOLD-BACK=")
		case strings.HasPrefix(l, "#EXT-X-PART-INF:PART-TARGET="):
			pl.partInf = true
		case strings.HasPrefix(l, "#EXT-X-MAP:"):
			init = attr(l, "URI")
		case strings.HasPrefix(l, "#EXT-X-PART:"):
			cur.parts = append(cur.parts, attr(l, "URI"))
		case strings.HasPrefix(l, "#EXT-X-PRELOAD-HINT:"):
			pl.hint = attr(l, "URI")
		case l != "" && !strings.HasPrefix(l, "#"):
			cur.init, cur.media = init, l
			pl.segs = append(pl.segs, cur)
			cur = llSegment{}
		}
	}
	if len(cur.parts) > 0 {
		cur.init = init
		pl.segs = append(pl.segs, cur) // the open segment
	}
	return pl
}

// next is the blocking reload asking for the part after the newest listed.
func (pl llPlaylist) next() string {
	last := pl.segs[len(pl.segs)-1]
	msn := pl.seq + int64(len(pl.segs)) - 1
	if last.media != "" {
		return fmt.Sprintf("_HLS_msn=%d&_HLS_part=0", msn+1)
	}
	return fmt.Sprintf("_HLS_msn=%d&_HLS_part=%d", msn, len(last.parts))
}

// TestLowLatencyLive publishes H.264 with ffmpeg over RTSP into a real
// vigil (4-s segments, 1-s parts) and plays live.m3u8 as an LL-HLS player
// does: blocking reloads that each return the next part, the preload hint
// fetched before it exists, and one segment's init section and parts
// fetched through their signed URLs, which ffmpeg decodes with no errors
// to the frames of the stored segment, byte for byte the same. Malformed
// _HLS_ parameters get 400, other accounts and a reseller under privacy
// mode 403.
func TestLowLatencyLive(t *testing.T) {
	testutil.RequireBinary(t, "ffmpeg")
	testutil.RequireBinary(t, "ffprobe")
	addr := testutil.FreePort(t)
	v := startVigil(t, nil, "--rtsp-addr", addr, "--rtsp-udp-addr", "off", "--segment-duration", "4s")
	ctx := context.Background()
	op := v.api
	var br struct{ Token string }
	br.Token = v.privacyTenants("ll")
	reseller, _ := v.newUser("r1", "admin@reseller.example", "admin")
	customer, _ := v.newUser("s1", "owner@customer.example", "user")
	foreign, _ := v.newUser("r2", "admin@other.example", "admin")

	n := &rtspNode{vigilNode: v, rtsp: addr, token: br.Token}
	n.publish(t, "br", br.Token, "ll", append(h264Args("320x240", 30, 25), "-rtsp_transport", "tcp")...)
	base := v.base + "/v1/streams/ll/"
	get := func(token, rel string) (int, string) {
		t.Helper()
		resp, err := authGet(base+rel, token, "")
		must(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		must(t, err)
		return resp.StatusCode, string(b)
	}

	// The first playlist with parts.
	var pl llPlaylist
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := get(customer, "live.m3u8")
		if code == 200 && strings.Contains(body, "#EXT-X-PART:") {
			pl = parseLL(t, body)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no parts in live.m3u8 within 30 s: %d\n%s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !pl.blocking || !pl.partInf || pl.hint == "" {
		t.Fatalf("not an LL-HLS playlist (server control %v, part-inf %v, hint %q):\n%s", pl.blocking, pl.partInf, pl.hint, pl.body)
	}

	// The preload hint answers once its part exists.
	hinted := pl.hint
	hintDone := make(chan int, 1)
	go func() {
		resp, err := http.Get(base + hinted)
		if err != nil {
			hintDone <- 0
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		hintDone <- resp.StatusCode
	}()

	// Blocking reloads until a segment closes: each returns the part asked
	// for.
	var whole llSegment
	for whole.media == "" {
		q := pl.next()
		code, body := get(customer, "live.m3u8?"+q)
		if code != 200 {
			t.Fatalf("live.m3u8?%s: %d %s", q, code, body)
		}
		next := parseLL(t, body)
		var msn, part int64
		if _, err := fmt.Sscanf(q, "_HLS_msn=%d&_HLS_part=%d", &msn, &part); err != nil {
			t.Fatal(err)
		}
		i := int(msn - next.seq)
		if i < 0 || i >= len(next.segs) || (len(next.segs[i].parts) <= int(part) && next.segs[i].media == "") {
			t.Fatalf("live.m3u8?%s returned without that part:\n%s", q, body)
		}
		for _, s := range next.segs {
			if s.media != "" && len(s.parts) > 0 {
				whole = s // closed, and listed part by part: all its parts
			}
		}
		pl = next
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatal("no segment closed within a minute")
		}
	}
	select {
	case code := <-hintDone:
		if code != 200 {
			t.Errorf("the preload hint %s: %d, want 200", hinted, code)
		}
	case <-time.After(30 * time.Second):
		t.Error("the preload hint did not answer")
	}

	// Init section and parts through their signed URLs, without a token.
	var joined []byte
	for _, rel := range append([]string{whole.init}, whole.parts...) {
		code, body := get("", rel)
		if code != 200 {
			t.Fatalf("GET %s: %d %s", rel, code, body)
		}
		joined = append(joined, body...)
	}
	f := filepath.Join(t.TempDir(), "parts.mp4")
	must(t, os.WriteFile(f, joined, 0o644))
	frames := decodeFrames(t, f)
	start := strings.TrimPrefix(strings.Split(whole.media, "/media.m4s")[0], "segments/")
	var stored string
	for deadline := time.Now().Add(30 * time.Second); ; {
		code, body := get(e2eToken, "segments/"+start)
		if code == 200 {
			stored = body
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("segment %s not stored: %d %s", start, code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if want := countFrames(t, base+"segments/"+start); frames != want || frames == 0 {
		t.Errorf("init + %d parts decode to %d frames, the stored segment to %d", len(whole.parts), frames, want)
	}
	if stored != string(joined) {
		t.Errorf("init + parts (%d bytes) differ from the stored segment (%d bytes)", len(joined), len(stored))
	}
	t.Logf("segment %s: %d parts, %d frames, %d bytes", start, len(whole.parts), frames, len(joined))

	t.Run("MalformedParams", func(t *testing.T) {
		msn := pl.seq + int64(len(pl.segs))
		for _, q := range []string{"_HLS_msn=abc", "_HLS_msn=-1", "_HLS_msn=%2B1", "_HLS_part=1", "_HLS_msn=1&_HLS_msn=2",
			"_HLS_msn=99999999999999999999", "_HLS_msn=1&_HLS_part=100000", "_HLS_skip=YES", "_HLS_msn=1&_HLS_part=",
			fmt.Sprintf("_HLS_msn=%d", msn+3), fmt.Sprintf("_HLS_msn=%d&_HLS_part=9", msn+1), "_HLS_msn=1;x"} {
			code, c := statusCode(t, base+"live.m3u8?"+q, customer)
			if code != 400 || c != "bad_hls_param" {
				t.Errorf("live.m3u8?%s: %d %q, want 400 bad_hls_param", q, code, c)
			}
		}
		for _, rel := range []string{"parts/xyz/1.m4s", "parts/" + strings.Repeat("a", 16) + "/x.m4s", "parts/" + strings.Repeat("a", 16) + "/1.mp4"} {
			if code, c := statusCode(t, base+rel, customer); code != 400 && code != 404 {
				t.Errorf("%s: %d %q, want 400 or 404", rel, code, c)
			}
		}
	})

	t.Run("Unauthorised", func(t *testing.T) {
		for _, c := range []struct {
			token string
			code  int
			err   string
		}{{"", 401, "unauthorized"}, {"not-a-token", 401, ""}, {foreign, 403, "forbidden"}, {br.Token, 403, "forbidden"}} {
			if code, e := statusCode(t, base+"live.m3u8", c.token); code != c.code || c.err != "" && e != c.err {
				t.Errorf("live.m3u8 with %q: %d %q, want %d %q", c.token, code, e, c.code, c.err)
			}
		}
	})

	t.Run("PrivacyMode", func(t *testing.T) {
		code, body := get(reseller, "live.m3u8")
		if code != 200 {
			t.Fatalf("reseller before privacy mode: %d %s", code, body)
		}
		rp := parseLL(t, body)
		// A blocking reload the reseller started before privacy mode, for a
		// part three ahead, is refused when it wakes.
		last := rp.segs[len(rp.segs)-1]
		ahead := fmt.Sprintf("live.m3u8?_HLS_msn=%d&_HLS_part=%d", rp.seq+int64(len(rp.segs))-1, len(last.parts)+3)
		if last.media != "" {
			ahead = fmt.Sprintf("live.m3u8?_HLS_msn=%d&_HLS_part=3", rp.seq+int64(len(rp.segs)))
		}
		woke := make(chan [2]any, 1)
		go func() {
			code, c := statusCode(t, base+ahead, reseller)
			woke <- [2]any{code, c}
		}()
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(getOK(t, v.base+"/metrics"), "vigil_live_blocked_requests 1"); {
			if time.Now().After(deadline) {
				t.Fatal("the reseller's blocking reload never waited")
			}
			time.Sleep(20 * time.Millisecond)
		}
		must(t, op.do(ctx, "PATCH", "/v1/accounts/s1", map[string]any{"privacy_mode": true}, nil))
		if got := <-woke; got[0] != 403 || got[1] != "privacy_mode" {
			t.Errorf("the reseller's blocking reload across the switch to privacy mode: %v, want 403 privacy_mode", got)
		}
		if code, c := statusCode(t, base+"live.m3u8", reseller); code != 403 || c != "privacy_mode" {
			t.Errorf("reseller's live.m3u8 under privacy mode: %d %q", code, c)
		}
		for _, rel := range []string{last.parts[len(last.parts)-1], last.init} {
			if code, c := statusCode(t, base+rel, ""); code != 403 || c != "privacy_mode" {
				t.Errorf("reseller's signed %s under privacy mode: %d %q", rel, code, c)
			}
		}
		if code, body := get(customer, "live.m3u8"); code != 200 {
			t.Errorf("the customer's own live.m3u8 under privacy mode: %d %s", code, body)
		}
	})
}
