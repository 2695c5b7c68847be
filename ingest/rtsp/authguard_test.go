package rtsp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/auth"
)

// rawConn drives the server by hand from a chosen loopback address.
type rawConn struct {
	t    *testing.T
	c    net.Conn
	br   *bufio.Reader
	cseq int
	base string
}

func rawDial(t *testing.T, ts *testServer, from string) *rawConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", ts.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, br: bufio.NewReader(c), base: "rtsp://" + ts.Addr().String() + "/"}
}

// do sends a request and returns the answer; err when the connection ended.
func (r *rawConn) do(method, uri string, hdr ...string) (*Response, error) {
	r.cseq++
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s RTSP/1.0\r\nCSeq: %d\r\n", method, uri, r.cseq)
	for _, h := range hdr {
		b.WriteString(h + "\r\n")
	}
	body := ""
	if method == "ANNOUNCE" {
		body = string(MarshalSDP([]Media{h264Media()}))
		fmt.Fprintf(&b, "Content-Type: application/sdp\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n" + body)
	_ = r.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.c.Write([]byte(b.String())); err != nil {
		return nil, err
	}
	first, h, respBody, err := readMessage(r.br, 1<<20)
	if err != nil {
		return nil, err
	}
	parts := strings.SplitN(first, " ", 3)
	st, _ := strconv.Atoi(parts[1])
	resp := &Response{Status: st, Header: h, Body: respBody}
	if len(parts) == 3 {
		resp.Reason = parts[2]
	}
	return resp, nil
}

var nonceParam = regexp.MustCompile(`nonce="([^"]+)"`)

func challengeNonce(t *testing.T, r *Response) string {
	t.Helper()
	for _, v := range r.Header.Values("Www-Authenticate") {
		if m := nonceParam.FindStringSubmatch(v); m != nil {
			return m[1]
		}
	}
	t.Fatalf("no Digest challenge in %+v", r)
	return ""
}

func digestAuth(user, pass, method, uri, nonce, extra string, p map[string]string) string {
	if p == nil {
		p = map[string]string{}
	}
	p["uri"], p["nonce"] = uri, nonce
	resp := digestResponse(md5hex(user+":vigil:"+pass), method, p)
	return fmt.Sprintf(`Authorization: Digest username="%s", realm="vigil", nonce="%s", uri="%s", response="%s"%s`, user, nonce, uri, resp, extra)
}

func TestDataBeforeAuthClosesConnection(t *testing.T) {
	ts := startServer(t, Config{}, newTestHandler())
	r := rawDial(t, ts, "")
	if resp, err := r.do("OPTIONS", r.base+"cam1"); err != nil || resp.Status != 200 {
		t.Fatalf("OPTIONS: %v %+v", err, resp)
	}
	if _, err := r.c.Write([]byte{'$', 0, 0, 4, 1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	readUntilClosed(t, r.c)
	if got := metricValue(ts.m.refused.WithLabelValues("data_before_auth")); got != 1 {
		t.Fatalf("refused{data_before_auth} = %v", got)
	}
}

// TestAuthTimeout: an unauthenticated connection is closed after
// AuthTimeout although it keeps sending OPTIONS; an authenticated one is not.
func TestAuthTimeout(t *testing.T) {
	h := newTestHandler()
	ts := startServer(t, Config{AuthTimeout: 300 * time.Millisecond}, h)
	pub := dial(t, ts.url("br", "token", "cam1"))
	if err := pub.Announce(context.Background(), []Media{h264Media()}); err != nil {
		t.Fatal(err)
	}
	r := rawDial(t, ts, "")
	closed := false
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := r.do("OPTIONS", r.base+"cam1"); err != nil {
			closed = true
			break
		}
	}
	if !closed {
		t.Fatal("unauthenticated connection kept open by OPTIONS")
	}
	if got := metricValue(ts.m.refused.WithLabelValues("auth_timeout")); got != 1 {
		t.Fatalf("refused{auth_timeout} = %v", got)
	}
	if resp, err := pub.Options(context.Background()); err != nil || resp.Status != 200 {
		t.Fatalf("the authenticated session was closed too: %v %+v", err, resp)
	}
}

// TestUnauthenticatedPool: unauthenticated connections are capped per
// address (503) and in all (the oldest makes room), apart from
// MaxSessions; a publisher still gets in.
func TestUnauthenticatedPool(t *testing.T) {
	h := newTestHandler()
	ts := startServer(t, Config{MaxSessions: 1, MaxUnauthenticated: 3, MaxUnauthenticatedPerIP: 2}, h)
	a1, a2 := rawDial(t, ts, "127.0.0.2"), rawDial(t, ts, "127.0.0.2")
	for _, r := range []*rawConn{a1, a2} {
		if resp, err := r.do("OPTIONS", r.base+"x"); err != nil || resp.Status != 200 {
			t.Fatalf("OPTIONS: %v %+v", err, resp)
		}
	}
	a3 := rawDial(t, ts, "127.0.0.2")
	if resp, err := a3.do("OPTIONS", a3.base+"x"); err != nil || resp.Status != 503 || resp.Reason != "Too Many Unauthenticated Connections" {
		t.Fatalf("third from one address: %v %+v", err, resp)
	}
	b1 := rawDial(t, ts, "127.0.0.3")
	if resp, err := b1.do("OPTIONS", b1.base+"x"); err != nil || resp.Status != 200 {
		t.Fatalf("OPTIONS: %v %+v", err, resp)
	}
	// The pool is full (3): a fourth address closes the oldest, a1.
	c1 := rawDial(t, ts, "127.0.0.4")
	if resp, err := c1.do("OPTIONS", c1.base+"x"); err != nil || resp.Status != 200 {
		t.Fatalf("OPTIONS: %v %+v", err, resp)
	}
	readUntilClosed(t, a1.c)
	if got := metricValue(ts.m.refused.WithLabelValues("unauthenticated_evicted")); got != 1 {
		t.Fatalf("refused{unauthenticated_evicted} = %v", got)
	}
	// A publisher gets in (closing the next oldest, a2), and leaves the pool.
	pub := dial(t, ts.url("br", "token", "cam1"))
	if err := pub.Announce(context.Background(), []Media{h264Media()}); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	readUntilClosed(t, a2.c)
	eventually(t, "pool gauge", func() bool { return metricValue(ts.m.unauthenticated) == 2 })
}

// TestDigestBoundToConnectionAndURI: a Digest answer works only on the
// connection that got the nonce and only for the URL it names.
func TestDigestBoundToConnectionAndURI(t *testing.T) {
	h := newTestHandler()
	h.announceErr = ErrNotFound // authenticated, then 404: ANNOUNCE can be repeated
	ts := startServer(t, Config{}, h)
	a := rawDial(t, ts, "")
	ch, err := a.do("ANNOUNCE", a.base+"cam1")
	if err != nil || ch.Status != 401 {
		t.Fatalf("challenge: %v %+v", err, ch)
	}
	good := digestAuth("br", "token", "ANNOUNCE", a.base+"cam1", challengeNonce(t, ch), "", nil)
	if resp, err := a.do("ANNOUNCE", a.base+"cam1", good); err != nil || resp.Status != 404 {
		t.Fatalf("genuine answer: %v %+v, want past authentication (404)", err, resp)
	}
	b := rawDial(t, ts, "")
	if resp, err := b.do("ANNOUNCE", b.base+"cam1", good); err != nil || resp.Status != 401 {
		t.Fatalf("replay on another connection: %v %+v", err, resp)
	}
	ch, _ = b.do("ANNOUNCE", b.base+"cam2")
	forCam1 := digestAuth("br", "token", "ANNOUNCE", b.base+"cam1", challengeNonce(t, ch), "", nil)
	if resp, err := b.do("ANNOUNCE", b.base+"cam2", forCam1); err != nil || resp.Status != 401 {
		t.Fatalf("answer for cam1 on a request for cam2: %v %+v", err, resp)
	}
	// The path alone (as some clients send it) names the same URL.
	pathOnly := digestAuth("br", "token", "ANNOUNCE", "/cam2", challengeNonce(t, ch), "", nil)
	if resp, err := b.do("ANNOUNCE", b.base+"cam2", pathOnly); err != nil || resp.Status != 404 {
		t.Fatalf("uri as a path: %v %+v", err, resp)
	}
	if got := metricValue(ts.m.refused.WithLabelValues("unauthorized")); got != 2 {
		t.Fatalf("refused{unauthorized} = %v, want 2", got)
	}
}

// TestDigestNonceCount: with qop=auth a nonce count may not repeat.
func TestDigestNonceCount(t *testing.T) {
	h := newTestHandler()
	h.announceErr = ErrNotFound
	ts := startServer(t, Config{}, h)
	a := rawDial(t, ts, "")
	ch, _ := a.do("ANNOUNCE", a.base+"cam1")
	nonce := challengeNonce(t, ch)
	p := map[string]string{"qop": "auth", "nc": "00000001", "cnonce": "abc"}
	hdr := digestAuth("br", "token", "ANNOUNCE", a.base+"cam1", nonce, `, qop=auth, nc=00000001, cnonce="abc"`, p)
	if resp, err := a.do("ANNOUNCE", a.base+"cam1", hdr); err != nil || resp.Status != 404 {
		t.Fatalf("first use: %v %+v", err, resp)
	}
	if resp, err := a.do("ANNOUNCE", a.base+"cam1", hdr); err != nil || resp.Status != 401 {
		t.Fatalf("nc repeated: %v %+v", err, resp)
	}
	p = map[string]string{"qop": "auth", "nc": "00000002", "cnonce": "abd"}
	hdr = digestAuth("br", "token", "ANNOUNCE", a.base+"cam1", nonce, `, qop=auth, nc=00000002, cnonce="abd"`, p)
	if resp, err := a.do("ANNOUNCE", a.base+"cam1", hdr); err != nil || resp.Status != 404 {
		t.Fatalf("next nc: %v %+v", err, resp)
	}
}

// TestDigestStale: an expired nonce with a correct answer gets 401 with
// stale=true and is no failure; with a wrong answer it is a plain 401.
func TestDigestStale(t *testing.T) {
	h := newTestHandler()
	lim := &recordingLimiter{}
	ts := startServer(t, Config{NonceTTL: time.Nanosecond, Limiter: lim}, h)
	a := rawDial(t, ts, "")
	ch, _ := a.do("ANNOUNCE", a.base+"cam1")
	nonce := challengeNonce(t, ch)
	time.Sleep(1100 * time.Millisecond) // nonces carry whole seconds
	resp, err := a.do("ANNOUNCE", a.base+"cam1", digestAuth("br", "token", "ANNOUNCE", a.base+"cam1", nonce, "", nil))
	if err != nil || resp.Status != 401 || !strings.Contains(strings.Join(resp.Header.Values("Www-Authenticate"), " "), "stale=true") {
		t.Fatalf("stale nonce, right answer: %v %+v", err, resp)
	}
	if lim.count() != 0 {
		t.Fatal("a stale nonce with the right answer counted as a failure")
	}
	resp, err = a.do("ANNOUNCE", a.base+"cam1", digestAuth("br", "guess", "ANNOUNCE", a.base+"cam1", nonce, "", nil))
	if err != nil || resp.Status != 401 || strings.Contains(strings.Join(resp.Header.Values("Www-Authenticate"), " "), "stale=true") {
		t.Fatalf("stale nonce, wrong answer: %v %+v", err, resp)
	}
	if lim.count() != 1 {
		t.Fatalf("failures %d, want 1", lim.count())
	}
}

type recordingLimiter struct {
	mu    sync.Mutex
	fails []string
}

func (l *recordingLimiter) Check(string, netip.Addr, string) (time.Duration, bool) { return 0, true }
func (l *recordingLimiter) Succeed(netip.Addr, string)                             {}
func (l *recordingLimiter) Fail(_ context.Context, _, reason string, _ netip.Addr, _ string, _ ...slog.Attr) {
	l.mu.Lock()
	l.fails = append(l.fails, reason)
	l.mu.Unlock()
}
func (l *recordingLimiter) count() int { l.mu.Lock(); defer l.mu.Unlock(); return len(l.fails) }

// TestFailureLimitAcrossConnections: with auth.Limiter, reconnecting does
// not reset the count; the refusal is 503 with Retry-After, closes the
// connection, and asks the Handler nothing. Another address gets in.
func TestFailureLimitAcrossConnections(t *testing.T) {
	h := newTestHandler()
	lim := auth.NewLimiter(auth.LimitConfig{Burst: 2, Refill: time.Minute})
	ts := startServer(t, Config{Limiter: lim}, h)
	for i := range 2 {
		c := dial(t, ts.url("br", "guess", "cam1"))
		c.PreferBasic = true
		if st := statusOf(t, c.Announce(context.Background(), []Media{h264Media()})); st != 401 {
			t.Fatalf("guess %d: %d", i, st)
		}
		c.Close()
	}
	_, _, basic, _ := h.snapshot()
	r := rawDial(t, ts, "127.0.0.1")
	resp, err := r.do("ANNOUNCE", r.base+"cam1", "Authorization: Basic "+basicB64("br", "token")) // right
	if err != nil || resp.Status != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("after the burst: %v %+v", err, resp)
	}
	readUntilClosed(t, r.c)
	if _, _, b, _ := h.snapshot(); b != basic {
		t.Fatal("the Handler was asked although the source is refused")
	}
	pub := rawDial(t, ts, "127.0.0.2")
	if resp, err := pub.do("ANNOUNCE", pub.base+"cam1", "Authorization: Basic "+basicB64("br", "token")); err != nil || resp.Status != 200 {
		t.Fatalf("the bridge from another address: %v %+v", err, resp)
	}
}

// TestNoSecretInRTSPLog: a token typed as the user, or put in the request
// URL, does not reach the log.
func TestNoSecretInRTSPLog(t *testing.T) {
	h := newTestHandler()
	h.users = map[string]string{"br": "S3cretToken-abcdefghijklmnopqrstuvwxyz0123"}
	secret := h.users["br"]
	var buf syncBuffer
	ts := startServer(t, Config{Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}, h)
	for _, basic := range []bool{true, false} {
		c := dial(t, ts.url(secret, "br", "cam1")) // swapped
		c.PreferBasic = basic
		if st := statusOf(t, c.Announce(context.Background(), []Media{h264Media()})); st != 401 {
			t.Fatalf("swapped: %d", st)
		}
	}
	r := rawDial(t, ts, "")
	_, _ = r.c.Write([]byte("OPTIONS rtsp://br:" + secret + "@host/cam1 RTSP/1.0 extra\r\nCSeq: 1\r\n\r\n"))
	readUntilClosed(t, r.c)
	r = rawDial(t, ts, "")
	_, _ = r.c.Write([]byte("OPTIONS rtsp://x/ RTSP/1.0\r\nCSeq: 1\r\nAuthorization Basic " + secret + "\r\n\r\n"))
	readUntilClosed(t, r.c)
	r = rawDial(t, ts, "")
	if resp, err := r.do("ANNOUNCE", "rtsp://br:"+secret+"@host/bad.path", "Authorization: Basic "+basicB64("br", secret)); err != nil || resp.Status != 400 {
		t.Fatalf("bad path: %v %+v", err, resp)
	}
	ts.stop(t)
	logs := buf.String()
	if !strings.Contains(logs, "ANNOUNCE refused") || !strings.Contains(logs, "malformed request") || !strings.Contains(logs, "user_sha256") {
		t.Fatalf("the paths under test were not logged:\n%s", logs)
	}
	if strings.Contains(logs, secret) || strings.Contains(logs, basicB64("br", secret)) {
		t.Fatalf("secret in the log:\n%s", logs)
	}
}

func basicB64(u, p string) string { return base64.StdEncoding.EncodeToString([]byte(u + ":" + p)) }

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"rtsp://br:tok@host:8554/cam":      "rtsp://REDACTED@host:8554/cam",
		"rtsp://tok@host/cam":              "rtsp://REDACTED@host/cam",
		"rtsp://host/cam@x":                "rtsp://host/cam@x",
		`ANNOUNCE rtsp://a:b@h/c RTSP/1.0`: `ANNOUNCE rtsp://REDACTED@h/c RTSP/1.0`,
		"x rtsp://a:b@h y rtsp://c:d@h2/p": "x rtsp://REDACTED@h y rtsp://REDACTED@h2/p",
		"rtsp://user:p@ss@host/cam":        "rtsp://REDACTED@host/cam",
		"no url here":                      "no url here",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestDialErrorHasNoCredentials(t *testing.T) {
	_, err := Dial(context.Background(), "rtsp://br:S3cret@host:99999999/cam\x7f")
	if err == nil || strings.Contains(err.Error(), "S3cret") {
		t.Fatalf("Dial error %v", err)
	}
}
