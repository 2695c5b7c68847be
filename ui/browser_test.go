package ui_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/internal/vigiltest"
)

var vigilBin string

func TestMain(m *testing.M) {
	os.Exit(vigiltest.Main(m, &vigilBin))
}

const (
	stream   = "cam1-main"
	email    = "watcher@reseller.example"
	password = "a long enough password"
)

// TestViewerPage drives /ui/ in headless Chromium (Debian's package) against
// a real node with storage in a real MinIO, while ffmpeg publishes a camera
// over RTSP into it: a reseller's user signs in, sees the camera with its
// health, the timeline shows the recording's spans, a click on it plays the
// recording (time advances, frames are presented), a dragged range exports a
// clip that ffmpeg decodes, live view plays, sign-out revokes the session;
// then, with privacy mode on, the same user (now with an API token) sees the
// timeline and the reason but no video. Screenshots go to VIGIL_ARTIFACTS.
func TestViewerPage(t *testing.T) {
	testutil.RequireBinary(t, "ffmpeg")
	testutil.RequireBinary(t, "ffprobe")
	chrome := testutil.RequireBinary(t, "chromium")
	mio := testutil.StartMinIO(t)
	n := vigiltest.Start(t, vigilBin, vigiltest.Options{Env: mio.Env(mio.Bucket(t)), RTSP: true,
		Args: []string{"--segment-duration", "2s"}})
	bridgeToken := provision(t, n)
	publish(t, n, bridgeToken)
	api := func(token string) *vigiltest.Client { return &vigiltest.Client{Base: n.Base, Token: token} }
	waitSegments(t, n, 3)

	ctx, logs := newBrowser(t, chrome)
	b := &browserPage{t: t, ctx: ctx}

	// Sign in with the user's e-mail and password.
	b.run(chromedp.Navigate(n.Base+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#email"), email),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`button.stream[data-stream="`+stream+`"]`)))
	session := eval[string](b, `sessionStorage.getItem('vigil.token') || ''`)
	if session == "" {
		t.Fatal("no session kept after sign-in")
	}

	// The camera is listed with its health: recording, as ffmpeg publishes.
	b.poll("the camera's health is recording", 30*time.Second, func() (bool, string) {
		s := eval[string](b, `document.querySelector('.camera[data-camera="cam1"] .state').textContent`)
		return s == "recording", s
	})

	// The timeline shows the recording's spans.
	b.run(chromedp.Click(chromedp.CSS(`button.stream[data-stream="` + stream + `"]`)))
	type span struct{ Start, End int64 }
	var pageSpans []span
	b.poll("the timeline's spans", 30*time.Second, func() (bool, string) {
		pageSpans = eval[[]span](b, `[...document.querySelectorAll('#spans .span')].map(s => ({start: +s.dataset.start, end: +s.dataset.end}))`)
		return len(pageSpans) > 0, fmt.Sprint(pageSpans)
	})
	var rec struct{ Spans []span }
	now := time.Now().UnixMilli()
	n.Must(api(vigiltest.Token).Do(context.Background(), "GET",
		fmt.Sprintf("/v1/streams/%s/recordings?spans=only&start=%d&end=%d", stream, now-24*3600_000, now), nil, &rec))
	if len(rec.Spans) != 1 || len(pageSpans) != 1 || pageSpans[0].Start != rec.Spans[0].Start || pageSpans[0].End > rec.Spans[0].End {
		t.Fatalf("timeline spans %v, the API's %v: want the one span of the recording", pageSpans, rec.Spans)
	}

	// Zoomed in to 10 minutes, a click on the timeline plays the recording
	// from there.
	b.run(chromedp.Click(chromedp.CSS(`#zoom button[data-zoom="600000"]`)))
	b.poll("a span 30 px wide", 60*time.Second, func() (bool, string) {
		w := eval[float64](b, `(document.querySelector('#spans .span') || {getBoundingClientRect: () => ({width: 0})}).getBoundingClientRect().width`)
		return w >= 30, fmt.Sprint(w)
	})
	x, y, w := b.spanBox()
	clicked := b.timeAtX(x + w*0.3)
	clickAt := time.Now()
	b.run(chromedp.MouseClickXY(x+w*0.3, y))
	b.waitPlaying("recording")
	t.Logf("recording: playing 2 s of video %s after the click", time.Since(clickAt).Round(100*time.Millisecond))
	// From the click on, not from the span's start (6 s and more before
	// it); how far it got depends on how fast this machine is.
	if at := b.playingDate(); at < clicked-2500 || at > clicked+30_000 {
		t.Errorf("playing %s after a click at %s", time.UnixMilli(at), time.UnixMilli(clicked))
	}
	b.screenshot("ui-playback.png")

	// A dragged range exports a clip that decodes.
	b.drag(x+w*0.1, x+w*0.8, y)
	from := eval[string](b, `document.getElementById('clip-from').value`)
	to := eval[string](b, `document.getElementById('clip-to').value`)
	if from == "" || to == "" || from >= to {
		t.Fatalf("the drag selected %q to %q", from, to)
	}
	b.run(chromedp.Click(chromedp.CSS("#clip-export")))
	b.poll("the clip's download link", 60*time.Second, func() (bool, string) {
		st := eval[string](b, `document.getElementById('clip-status').textContent`)
		return !eval[bool](b, `document.getElementById('clip-link').hidden`), st
	})
	clip := b.download(chromedp.CSS("#clip-link"))
	checkClip(t, clip, from, to)

	// Live view plays (how far behind the camera is logged, not asserted).
	b.run(chromedp.Click(chromedp.CSS("#live")))
	b.waitPlaying("live")
	t.Logf("live view: %s", eval[string](b, `document.getElementById('mode').textContent`))
	// Recorded over RTSP on this node: low-latency HLS, with parts.
	if parts := eval[string](b, `document.getElementById('video').dataset.parts`); parts != "yes" {
		t.Errorf("live view played without LL-HLS parts (%q)", parts)
	}
	b.screenshot("ui-live.png")

	// An H.265 camera: Debian's Chromium has no H.265 in Media Source, and
	// the page says so instead of failing silently.
	hevc := testutil.FFmpegSegment(t, "640x360", "libx265", "mp4")
	at := time.Now().Add(-time.Minute).Truncate(time.Second).UnixMilli()
	for i := range 2 {
		if code, msg := n.Put(bridgeToken, "cam2-hevc", at+int64(i)*2000, hevc, "video/mp4"); code != http.StatusCreated {
			t.Fatalf("upload H.265 segment: %d %s", code, msg)
		}
	}
	b.run(chromedp.Navigate(n.Base+"/ui/"), chromedp.WaitVisible(chromedp.CSS(`button.stream[data-stream="cam2-hevc"]`)),
		chromedp.Click(chromedp.CSS(`button.stream[data-stream="cam2-hevc"]`)))
	b.poll("the H.265 span", 30*time.Second, func() (bool, string) {
		return eval[int](b, `document.querySelectorAll('#spans .span').length`) > 0, ""
	})
	b.run(chromedp.Click(chromedp.CSS(`#zoom button[data-zoom="600000"]`)))
	x, y, w = b.spanBox()
	b.run(chromedp.MouseClickXY(x+w*0.5, y))
	b.poll("the page saying it cannot decode H.265", 30*time.Second, func() (bool, string) {
		e := eval[string](b, `document.getElementById('player-error').textContent`)
		return strings.Contains(e, "cannot decode"), e
	})

	// Sign-out revokes the session.
	b.run(chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#token-form")))
	b.poll("the session revoked", 10*time.Second, func() (bool, string) {
		err := api(session).Do(context.Background(), "GET", "/v1/accounts", nil, nil)
		se, ok := err.(*vigiltest.StatusError)
		return ok && se.Status == http.StatusUnauthorized, fmt.Sprint(err)
	})

	// Privacy mode: the customer's admin... here the operator, switches it
	// on; the reseller's user signs in with an API token and gets the
	// timeline and the reason, and no video.
	apiToken := userToken(t, n)
	n.Must(api(vigiltest.Token).Do(context.Background(), "PATCH", "/v1/accounts/s1", map[string]any{"privacy_mode": true}, nil))
	b.run(chromedp.SendKeys(chromedp.CSS("#token"), apiToken),
		chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`button.stream[data-stream="`+stream+`"]`)),
		chromedp.Click(chromedp.CSS(`button.stream[data-stream="`+stream+`"]`)),
		chromedp.WaitVisible(chromedp.CSS("#privacy")))
	reason := eval[string](b, `document.getElementById('privacy').textContent`)
	if code := eval[string](b, `document.getElementById('privacy').dataset.code`); code != "privacy_mode" || !strings.Contains(reason, "privacy mode") {
		t.Errorf("privacy box: code %q, text %q", code, reason)
	}
	b.poll("the timeline under privacy mode", 30*time.Second, func() (bool, string) {
		k := eval[int](b, `document.querySelectorAll('#spans .span').length`)
		return k > 0, fmt.Sprint(k)
	})
	x, y, w = b.spanBox()
	b.run(chromedp.MouseClickXY(x+w*0.5, y))
	state := eval[map[string]any](b, `(() => { const v = document.getElementById('video');
		return {hidden: document.getElementById('player').hidden, src: v.getAttribute('src') || '', readyState: v.readyState,
			mode: v.dataset.mode, liveDisabled: document.getElementById('live').disabled} })()`)
	if state["hidden"] != true || state["src"] != "" || state["readyState"] != 0.0 || state["mode"] != "" || state["liveDisabled"] != true {
		t.Errorf("under privacy mode the player is %v: want it hidden, without a source or media, live view off", state)
	}
	b.screenshot("ui-privacy.png")

	if v := eval[string](b, `window.__cspViolations.join('; ')`); v != "" {
		t.Errorf("Content-Security-Policy violations: %s", v)
	}
	// The tokens travel in headers only: the node's log (every request at
	// debug level) never holds them.
	for name, tok := range map[string]string{"session": session, "API token": apiToken} {
		if strings.Contains(n.Logs(), tok) {
			t.Errorf("the %s appears in the node's log", name)
		}
	}
	if t.Failed() {
		t.Logf("browser console:\n%s", logs())
	}
}

// TestPlaysAcrossRuns plays, in the page, a recording whose picture size
// changes (640x360 to 1280x720, each encoded as one run of segments with
// continuous decode times): the playlist starts a new run there, with a
// discontinuity and a new EXT-X-MAP, and hls.js in Chromium plays on across
// it. ffmpeg 5.1's HLS reader cannot (README, HLS), so this is where the
// whole playlist is checked.
func TestPlaysAcrossRuns(t *testing.T) {
	testutil.RequireBinary(t, "ffmpeg")
	chrome := testutil.RequireBinary(t, "chromium")
	n := vigiltest.Start(t, vigilBin, vigiltest.Options{})
	token := n.Provision("runs")
	start := time.Now().Add(-2 * time.Minute).Truncate(time.Second).UnixMilli()
	segs := append(encodeRun(t, "640x360", 3), encodeRun(t, "1280x720", 3)...)
	for i, seg := range segs {
		if code, msg := n.Put(token, "runs", start+int64(i)*2000, seg, "video/mp4"); code != http.StatusCreated {
			t.Fatalf("upload %d: %d %s", i, code, msg)
		}
	}
	// The premise: two runs, one discontinuity between them.
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/v1/streams/runs/playlist.m3u8?start=%d&end=%d", n.Base, start, start+12_000), nil)
	req.Header.Set("Authorization", "Bearer "+vigiltest.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	pl, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if d, m := strings.Count(string(pl), "#EXT-X-DISCONTINUITY\n"), strings.Count(string(pl), "#EXT-X-MAP"); resp.StatusCode != 200 || d != 1 || m != 2 {
		t.Fatalf("playlist (%d): %d discontinuities and %d maps, want 1 and 2:\n%s", resp.StatusCode, d, m, pl)
	}

	ctx, logs := newBrowser(t, chrome)
	b := &browserPage{t: t, ctx: ctx}
	b.run(chromedp.Navigate(n.Base+"/ui/"),
		chromedp.SendKeys(chromedp.CSS("#token"), vigiltest.Token),
		chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)),
		chromedp.Click(chromedp.CSS(`button.stream[data-stream="runs"]`)),
		chromedp.Click(chromedp.CSS(`#zoom button[data-zoom="600000"]`)))
	b.poll("the span", 30*time.Second, func() (bool, string) {
		return eval[int](b, `document.querySelectorAll('#spans .span').length`) == 1, ""
	})
	x, y, _ := b.spanBox()
	b.run(chromedp.MouseClickXY(x+1, y))
	b.waitPlaying("recording")
	b.poll("playing on in 1280x720 past the change", 60*time.Second, func() (bool, string) {
		s := eval[struct {
			Width, Height float64
			Time          float64
			Presented     float64
			Error         string
		}](b, `(() => { const v = document.getElementById('video'); return {width: v.videoWidth, height: v.videoHeight,
			time: v.currentTime, presented: window.__presented, error: document.getElementById('player-error').textContent} })()`)
		if s.Error != "" {
			b.t.Fatalf("player error: %s", s.Error)
		}
		// 6 s of 640x360 come first; 25 frames a second.
		return s.Width == 1280 && s.Height == 720 && s.Time > 7 && s.Presented > 7*25*0.8, fmt.Sprintf("%+v", s)
	})
	b.screenshot("ui-runs.png")
	if t.Failed() {
		t.Logf("browser console:\n%s", logs())
	}
}

// encodeRun has ffmpeg encode k segments of 2 s at size (H.264, one GOP a
// segment) as one HLS fMP4 run, and returns each as a Bridge uploads it:
// the shared init section followed by the segment's moof and mdat (the
// styp and sidx ffmpeg puts first are left out), decode times running on.
func encodeRun(t *testing.T, size string, k int) [][]byte {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc2=size="+size+":rate=25",
		"-t", strconv.Itoa(2*k), "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "50", "-keyint_min", "50",
		"-sc_threshold", "0", "-f", "hls", "-hls_time", "2", "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4",
		"-hls_segment_filename", filepath.Join(dir, "seg%d.m4s"), filepath.Join(dir, "index.m3u8"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	init, err := os.ReadFile(filepath.Join(dir, "init.mp4"))
	if err != nil {
		t.Fatal(err)
	}
	var segs [][]byte
	for i := range k {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("seg%d.m4s", i)))
		if err != nil {
			t.Fatal(err)
		}
		seg := append([]byte(nil), init...)
		for len(b) >= 8 {
			size := int(binary.BigEndian.Uint32(b))
			if size < 8 || size > len(b) {
				t.Fatalf("seg%d.m4s: a box of %d bytes", i, size)
			}
			if typ := string(b[4:8]); typ != "styp" && typ != "sidx" {
				seg = append(seg, b[:size]...)
			}
			b = b[size:]
		}
		segs = append(segs, seg)
	}
	return segs
}

// provision makes reseller r1 with sub-account s1 (privacy mode allowed),
// a bridge and a camera in s1, and an admin user of r1 with a password. It
// returns the bridge's token.
func provision(t *testing.T, n *vigiltest.Node) string {
	ctx := context.Background()
	op := n.API
	n.Must(op.Do(ctx, "POST", "/v1/accounts", map[string]any{"id": "r1", "name": "Reseller"}, nil))
	n.Must(op.Do(ctx, "POST", "/v1/accounts", map[string]any{"id": "s1", "name": "Corner Shop", "parent": "r1"}, nil))
	n.Must(op.Do(ctx, "PATCH", "/v1/accounts/s1", map[string]any{"privacy_mode_allowed": true}, nil))
	var br struct{ Token string }
	n.Must(op.Do(ctx, "POST", "/v1/accounts/s1/bridges", map[string]any{"id": "br", "name": "Shop bridge"}, &br))
	n.Must(op.Do(ctx, "POST", "/v1/bridges/br/cameras", map[string]any{"id": "cam1", "name": "Front door",
		"streams": []map[string]any{{"id": stream, "width": 640, "height": 360, "retention_days": 7}}}, nil))
	n.Must(op.Do(ctx, "POST", "/v1/bridges/br/cameras", map[string]any{"id": "cam2", "name": "Yard (H.265)",
		"streams": []map[string]any{{"id": "cam2-hevc", "width": 640, "height": 360, "retention_days": 7}}}, nil))
	var u struct{ Invitation struct{ Token string } }
	n.Must(op.Do(ctx, "POST", "/v1/accounts/r1/users", map[string]any{"email": email, "role": "admin"}, &u))
	anon := &vigiltest.Client{Base: n.Base}
	n.Must(anon.Do(ctx, "POST", "/v1/invitations/"+u.Invitation.Token+"/accept", map[string]any{"password": password}, nil))
	return br.Token
}

// userToken logs the user in and makes it a named API token.
func userToken(t *testing.T, n *vigiltest.Node) string {
	ctx := context.Background()
	var s, tok struct{ Token string }
	n.Must((&vigiltest.Client{Base: n.Base}).Do(ctx, "POST", "/v1/sessions", map[string]any{"email": email, "password": password}, &s))
	n.Must((&vigiltest.Client{Base: n.Base, Token: s.Token}).Do(ctx, "POST", "/v1/tokens", map[string]any{"name": "viewer page test"}, &tok))
	return tok.Token
}

// publish has ffmpeg send H.264 (yuv420p, which browsers decode; one
// keyframe a second) over RTSP in real time until the test ends.
func publish(t *testing.T, n *vigiltest.Node, token string) {
	url := fmt.Sprintf("rtsp://br:%s@%s/%s", token, n.RTSPAddr, stream)
	cmd := exec.Command("ffmpeg", "-v", "error", "-nostdin", "-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
		"-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "25", "-t", "900",
		"-f", "rtsp", "-rtsp_transport", "tcp", url)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("ffmpeg: %s", out.String())
		}
	})
}

// waitSegments waits until the stream has k recorded segments.
func waitSegments(t *testing.T, n *vigiltest.Node, k int) {
	deadline := time.Now().Add(90 * time.Second)
	for {
		var rec struct{ Segments []struct{ Start int64 } }
		now := time.Now().UnixMilli()
		err := n.API.Do(context.Background(), "GET", fmt.Sprintf("/v1/streams/%s/recordings?start=%d&end=%d", stream, now-3600_000, now+60_000), nil, &rec)
		if err == nil && len(rec.Segments) >= k {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d segments recorded after 90 s: %v\n%s", len(rec.Segments), k, err, vigiltest.Tail(n.Logs(), 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// newBrowser starts headless Chromium with a fresh profile. The network is
// closed to all but loopback. It records CSP violations in
// window.__cspViolations and returns the console's messages on demand.
func newBrowser(t *testing.T, chrome string) (context.Context, func() string) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: `window.__cspViolations = [];
			document.addEventListener('securitypolicyviolation', e => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));`})
		return err
	}))
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	var mu sync.Mutex
	var console []string
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			mu.Lock()
			console = append(console, fmt.Sprintf("%s: %s", m.Type, m.Text))
			mu.Unlock()
		}
	}()
	// The whole browser session is bounded; the first Do above must not be.
	deadline, cancelDeadline := context.WithTimeout(ctx, 6*time.Minute)
	t.Cleanup(cancelDeadline)
	return deadline, func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(console, "\n")
	}
}

// browserPage runs actions on the page, failing the test on errors.
type browserPage struct {
	t   *testing.T
	ctx context.Context
}

func (b *browserPage) run(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// eval evaluates js in the page (awaiting a promise) into a T.
func eval[T any](b *browserPage, js string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("browser: evaluate %.60q: %v", js, err)
	}
	return v
}

// poll evaluates cond until it holds, failing with its last detail after
// timeout.
func (b *browserPage) poll(what string, timeout time.Duration, cond func() (bool, string)) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			b.screenshot("failed.png")
			b.t.Fatalf("waiting for %s: %s", what, detail)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// spanBox returns the middle height, left edge and width of the first span
// on the timeline, in CSS pixels.
func (b *browserPage) spanBox() (x, y, w float64) {
	b.t.Helper()
	r := eval[struct{ X, Y, W, H float64 }](b, `(() => { const r = document.querySelector('#spans .span').getBoundingClientRect();
		return {x: r.left, y: r.top, w: r.width, h: r.height} })()`)
	if r.W < 4 {
		b.t.Fatalf("the span is %.1f px wide", r.W)
	}
	return r.X, r.Y + r.H/2, r.W
}

// timeAtX is the wall time (Unix ms) the timeline shows at x.
func (b *browserPage) timeAtX(x float64) int64 {
	b.t.Helper()
	r := eval[struct{ From, To, Left, Width float64 }](b, `(() => { const t = document.getElementById('timeline');
		const r = t.getBoundingClientRect(); return {from: +t.dataset.from, to: +t.dataset.to, left: r.left, width: r.width} })()`)
	return int64(r.From + (x-r.Left)/r.Width*(r.To-r.From))
}

// drag presses the mouse at x1, moves to x2 and releases it there.
func (b *browserPage) drag(x1, x2, y float64) {
	b.t.Helper()
	held := func(p *input.DispatchMouseEventParams) { p.Button, p.Buttons = input.MouseButtonLeft, 1 }
	b.run(chromedp.MouseEvent(chromedp.MouseMoved, x1, y),
		chromedp.MouseEvent(chromedp.MousePressed, x1, y, held, chromedp.ClickCount(1)),
		chromedp.MouseEvent(chromedp.MouseMoved, (x1+x2)/2, y, held),
		chromedp.MouseEvent(chromedp.MouseMoved, x2, y, held),
		chromedp.MouseEvent(chromedp.MouseReleased, x2, y, chromedp.ButtonLeft, chromedp.ClickCount(1)))
}

// waitPlaying waits until the video plays in mode: its currentTime
// advances by 2 s and the browser presents frames while it does (counted
// by requestVideoFrameCallback and getVideoPlaybackQuality).
func (b *browserPage) waitPlaying(mode string) {
	b.t.Helper()
	b.run(chromedp.Evaluate[chromedp.Void](`(() => { const v = document.getElementById('video'); window.__presented = 0;
		const f = () => { window.__presented++; v.requestVideoFrameCallback(f); }; v.requestVideoFrameCallback(f); })()`))
	var first *float64
	b.poll("the video playing "+mode, 90*time.Second, func() (bool, string) {
		s := eval[struct {
			Mode      string
			Time      float64
			Presented float64
			Quality   float64
			Error     string
		}](b, `(() => { const v = document.getElementById('video'); const q = v.getVideoPlaybackQuality();
			return {mode: v.dataset.mode, time: v.currentTime, presented: window.__presented,
				quality: q.totalVideoFrames - q.droppedVideoFrames, error: document.getElementById('player-error').textContent} })()`)
		detail := fmt.Sprintf("%+v", s)
		if s.Mode != mode || s.Time == 0 {
			return false, detail
		}
		if first == nil {
			first = &s.Time
			return false, detail
		}
		return s.Time >= *first+2 && s.Presented >= 25 && s.Quality >= 25, detail
	})
}

// playingDate is the wall time (Unix ms) of the playing position, from the
// playhead the page draws.
func (b *browserPage) playingDate() int64 {
	b.t.Helper()
	return b.timeAtX(eval[float64](b, `document.getElementById('playhead').getBoundingClientRect().left`))
}

// download clicks sel, a download link, and returns the file the browser
// saved.
func (b *browserPage) download(sel chromedp.CSS) []byte {
	b.t.Helper()
	dir := b.t.TempDir()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	progress := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
	b.run(chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dir, EventsEnabled: ptr(true)})
		return err
	}), chromedp.Click(sel))
	for ev, err := range progress {
		if err != nil {
			b.t.Fatalf("download: %v", err)
		}
		switch ev.State {
		case browser.DownloadProgressStateCompleted:
			d, err := os.ReadFile(filepath.Join(dir, ev.GUID))
			if err != nil {
				b.t.Fatal(err)
			}
			return d
		case browser.DownloadProgressStateCanceled:
			b.t.Fatal("download canceled")
		}
	}
	b.t.Fatal("download: no progress events")
	return nil
}

func ptr[T any](v T) *T { return &v }

// screenshot writes the page's screenshot under VIGIL_ARTIFACTS (default
// ./artifacts) as name.
func (b *browserPage) screenshot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	dir := os.Getenv("VIGIL_ARTIFACTS")
	if dir == "" {
		dir = "artifacts"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", p)
}

// checkClip checks that the exported clip is an MP4 that ffmpeg decodes
// without an error and that lasts what the range from..to (the page's
// local datetime inputs, second precision) asked for, within a GOP (1 s)
// and a second of rounding.
func checkClip(t *testing.T, clip []byte, from, to string) {
	t.Helper()
	if len(clip) < 8 || string(clip[4:8]) != "ftyp" {
		t.Fatalf("the clip (%d bytes) is not an MP4", len(clip))
	}
	f := filepath.Join(t.TempDir(), "clip.mp4")
	if err := os.WriteFile(f, clip, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ffmpeg", "-v", "error", "-nostdin", "-i", f, "-f", "null", "-").CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("the clip does not decode cleanly: %v\n%s", err, out)
	}
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", f).Output()
	if err != nil {
		t.Fatal(err)
	}
	d, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		t.Fatal(err)
	}
	a, err1 := time.ParseInLocation("2006-01-02T15:04:05", from, time.Local)
	z, err2 := time.ParseInLocation("2006-01-02T15:04:05", to, time.Local)
	if err1 != nil || err2 != nil {
		t.Fatalf("range %q..%q: %v %v", from, to, err1, err2)
	}
	want := z.Sub(a).Seconds()
	if d < want-2 || d > want+2 {
		t.Errorf("clip of %s..%s lasts %.2f s, want %.0f s ± 2 s", from, to, d, want)
	}
	t.Logf("clip %s..%s: %d bytes, %.2f s", from, to, len(clip), d)
}
