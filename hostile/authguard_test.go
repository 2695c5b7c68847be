package hostile

// Attacks on authentication: RTSP connections that never authenticate,
// data before authentication, Digest replay, secrets in the log, and
// guessing tokens and passwords over HTTP and RTSP.

import (
	"bufio"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/vigilcloud/vigil/ingest/rtsp"
	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/internal/vigiltest"
)

// rawRTSP is a hand-driven RTSP connection from a chosen loopback source
// address (127.0.0.0/8 is all loopback on Linux, so each address is a
// different source to the node).
type rawRTSP struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
	cseq int
	host string
}

func dialRTSPFrom(t *testing.T, addr, from string) (*rawRTSP, error) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return &rawRTSP{t: t, conn: c, br: bufio.NewReader(c), host: addr}, nil
}

// startRTSP starts a node with RTSP and waits until its RTSP port accepts
// (readyz can answer before the RTSP listener is up).
func startRTSP(t *testing.T, o vigiltest.Options) *vigiltest.Node {
	t.Helper()
	o.RTSP = true
	n := vigiltest.Start(t, vigilBin, o)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", n.RTSPAddr, time.Second)
		if err == nil {
			c.Close()
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("RTSP not listening: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *rawRTSP) url(path string) string { return "rtsp://" + r.host + "/" + path }

type rtspAnswer struct {
	status int
	reason string
	header textproto.MIMEHeader
}

// do sends one request (extra header lines "K: V") and reads the answer.
func (r *rawRTSP) do(method, uri string, hdr []string, body string) (rtspAnswer, error) {
	r.cseq++
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s RTSP/1.0\r\nCSeq: %d\r\n", method, uri, r.cseq)
	for _, h := range hdr {
		b.WriteString(h + "\r\n")
	}
	if body != "" {
		fmt.Fprintf(&b, "Content-Type: application/sdp\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n" + body)
	_ = r.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.conn.Write([]byte(b.String())); err != nil {
		return rtspAnswer{}, err
	}
	tp := textproto.NewReader(r.br)
	line, err := tp.ReadLine()
	if err != nil {
		return rtspAnswer{}, err
	}
	parts := strings.SplitN(line, " ", 3)
	if len(parts) < 2 {
		return rtspAnswer{}, fmt.Errorf("bad status line %q", line)
	}
	st, _ := strconv.Atoi(parts[1])
	h, err := tp.ReadMIMEHeader()
	if err != nil && !errors.Is(err, io.EOF) {
		return rtspAnswer{}, err
	}
	if n, _ := strconv.Atoi(h.Get("Content-Length")); n > 0 {
		if _, err := io.CopyN(io.Discard, r.br, int64(n)); err != nil {
			return rtspAnswer{}, err
		}
	}
	a := rtspAnswer{status: st, header: h}
	if len(parts) == 3 {
		a.reason = parts[2]
	}
	return a, nil
}

// closedWithin reports whether the node closes the connection within d
// (whatever it still sends is read and dropped).
func (r *rawRTSP) closedWithin(d time.Duration) bool {
	_ = r.conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, r.br)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

const sdpH264 = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n" +
	"a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z0LAHtkDxWhAAAADAEAAAAwDxYuS,aMuMsg==\r\na=control:trackID=0\r\n"

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

var nonceRe = regexp.MustCompile(`nonce="([^"]+)"`)

// digestHeader answers the Digest challenge of a 401 for method and uri
// (RFC 2617 without qop, as ffmpeg does).
func digestHeader(t *testing.T, challenge rtspAnswer, user, pass, method, uri string) string {
	t.Helper()
	var nonce string
	for _, v := range challenge.header.Values("Www-Authenticate") {
		if m := nonceRe.FindStringSubmatch(v); m != nil && strings.HasPrefix(v, "Digest") {
			nonce = m[1]
		}
	}
	if nonce == "" {
		t.Fatalf("no Digest challenge in %+v", challenge)
	}
	ha1 := md5hex(user + ":vigil:" + pass)
	resp := md5hex(ha1 + ":" + nonce + ":" + md5hex(method+":"+uri))
	return fmt.Sprintf(`Authorization: Digest username="%s", realm="vigil", nonce="%s", uri="%s", response="%s"`, user, nonce, uri, resp)
}

func basicHeader(user, pass string) string {
	return "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// publish connects as a Bridge with the project's RTSP client, records a
// few packets and tears down.
func publish(ctx context.Context, addr, user, pass, stream string, basic bool) error {
	c, err := rtsp.Dial(ctx, fmt.Sprintf("rtsp://%s:%s@%s/%s", user, pass, addr, stream))
	if err != nil {
		return err
	}
	defer c.Close()
	c.PreferBasic = basic
	media := rtsp.Media{Type: "video", Codec: "H264", PayloadType: 96, ClockRate: 90000,
		Fmtp: map[string]string{"packetization-mode": "1", "sprop-parameter-sets": "Z0LAHtkDxWhAAAADAEAAAAwDxYuS,aMuMsg=="}}
	if err := c.Announce(ctx, []rtsp.Media{media}); err != nil {
		return err
	}
	if err := c.Setup(ctx, 0, true); err != nil {
		return err
	}
	if err := c.Record(ctx); err != nil {
		return err
	}
	for i := range 5 {
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(i), Timestamp: uint32(i) * 3600, SSRC: 1},
			Payload: []byte{0x41, 1, 2, 3}}
		if err := c.WriteRTP(0, pkt); err != nil {
			return err
		}
	}
	return c.Teardown(ctx)
}

// TestRTSPUnauthenticatedConnectionsDoNotLockOutPublishers: twice
// --rtsp-max-sessions connections from five addresses that never
// authenticate (they send OPTIONS now and then) do not keep a Bridge with
// valid credentials out; one address gets a few, and they are closed after
// the authentication deadline.
func TestRTSPUnauthenticatedConnectionsDoNotLockOutPublishers(t *testing.T) {
	ffmpeg := testutil.RequireBinary(t, "ffmpeg")
	n := startRTSP(t, vigiltest.Options{
		Args: []string{"--rtsp-max-sessions", "20"},
		Env:  []string{"VIGIL_RTSP_AUTH_TIMEOUT=3s"}})
	tok := n.Provision("cam1")
	var idle []*rawRTSP
	for a := 2; a <= 6; a++ {
		from := fmt.Sprintf("127.0.0.%d", a)
		for range 8 {
			r, err := dialRTSPFrom(t, n.RTSPAddr, from)
			if err != nil {
				t.Fatal(err)
			}
			if ans, err := r.do("OPTIONS", r.url("cam1"), nil, ""); err == nil && ans.status == 200 {
				idle = append(idle, r) // holds a place; refused ones do not
			}
		}
	}
	// A ninth from one address is turned away at once.
	r, err := dialRTSPFrom(t, n.RTSPAddr, "127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	if ans, err := r.do("OPTIONS", r.url("cam1"), nil, ""); err == nil && ans.status != 503 {
		t.Fatalf("ninth unauthenticated connection from one address: %+v", ans)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := publish(ctx, n.RTSPAddr, "br", tok, "cam1", false); err != nil {
		t.Fatalf("a Bridge with valid credentials is locked out by %d unauthenticated connections: %v", len(idle), err)
	}
	// And ffmpeg (OPTIONS, ANNOUNCE, 401, Digest, SETUP, RECORD) as a Bridge runs it.
	out, err := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-c:v", "libx264", "-g", "25", "-t", "2", "-rtsp_transport", "tcp", "-f", "rtsp",
		fmt.Sprintf("rtsp://br:%s@%s/cam1", tok, n.RTSPAddr)).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg publishing with valid credentials among %d unauthenticated connections: %v\n%s", len(idle), err, out)
	}
	// None of them authenticated: the deadline closes them (bounded wait).
	for i, r := range idle {
		if !r.closedWithin(15 * time.Second) {
			t.Fatalf("unauthenticated connection %d still open after the authentication deadline", i)
		}
	}
}

// TestRTSPDataBeforeAuthClosesConnection: interleaved "$" frames before
// authentication end the connection instead of being read and dropped.
func TestRTSPDataBeforeAuthClosesConnection(t *testing.T) {
	n := startRTSP(t, vigiltest.Options{})
	r, err := dialRTSPFrom(t, n.RTSPAddr, "")
	if err != nil {
		t.Fatal(err)
	}
	if ans, err := r.do("OPTIONS", r.url("x"), nil, ""); err != nil || ans.status != 200 {
		t.Fatalf("OPTIONS: %v %+v", err, ans)
	}
	frame := make([]byte, 4+60000)
	frame[0], frame[1], frame[2], frame[3] = '$', 0, byte((len(frame)-4)>>8), byte(len(frame)-4)
	go func() {
		_ = r.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		for range 50 { // 3 MB at most
			if _, err := r.conn.Write(frame); err != nil {
				return
			}
		}
	}()
	if !r.closedWithin(10 * time.Second) {
		t.Fatal("the node keeps reading interleaved data from a connection that never authenticated")
	}
}

// TestRTSPDigestReplayRefused: an Authorization header that worked once is
// refused on a new connection, for the same stream and for another; and a
// Digest answer computed for one URL does not open another.
func TestRTSPDigestReplayRefused(t *testing.T) {
	n := startRTSP(t, vigiltest.Options{})
	tok := n.Provision("s1", "s2")

	a, err := dialRTSPFrom(t, n.RTSPAddr, "")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := a.do("ANNOUNCE", a.url("s1"), nil, sdpH264)
	if err != nil || ch.status != 401 {
		t.Fatalf("ANNOUNCE without credentials: %v %+v", err, ch)
	}
	captured := digestHeader(t, ch, "br", tok, "ANNOUNCE", a.url("s1"))
	if ans, err := a.do("ANNOUNCE", a.url("s1"), []string{captured}, sdpH264); err != nil || ans.status != 200 {
		t.Fatalf("genuine Digest ANNOUNCE: %v %+v", err, ans)
	}
	a.conn.Close() // the stream is free again
	time.Sleep(200 * time.Millisecond)

	for _, stream := range []string{"s1", "s2"} {
		b, err := dialRTSPFrom(t, n.RTSPAddr, "")
		if err != nil {
			t.Fatal(err)
		}
		ans, err := b.do("ANNOUNCE", b.url(stream), []string{captured}, sdpH264)
		if err != nil || ans.status != 401 {
			t.Fatalf("replayed Authorization on a new connection for %s: %v %+v, want 401", stream, err, ans)
		}
	}

	// Same connection, fresh nonce, but the answer is for s1 and the request for s2.
	c, err := dialRTSPFrom(t, n.RTSPAddr, "")
	if err != nil {
		t.Fatal(err)
	}
	ch, err = c.do("ANNOUNCE", c.url("s2"), nil, sdpH264)
	if err != nil || ch.status != 401 {
		t.Fatalf("ANNOUNCE without credentials: %v %+v", err, ch)
	}
	other := digestHeader(t, ch, "br", tok, "ANNOUNCE", c.url("s1"))
	if ans, err := c.do("ANNOUNCE", c.url("s2"), []string{other}, sdpH264); err != nil || ans.status != 401 {
		t.Fatalf("Digest uri for s1 on a request for s2: %v %+v, want 401", err, ans)
	}
}

// TestNoSecretsInLogs runs every authentication path, right and wrong,
// then looks for every secret in the node's log.
func TestNoSecretsInLogs(t *testing.T) {
	n := startRTSP(t, vigiltest.Options{})
	tok := n.Provision("s1")
	badTok := strings.Repeat("Z", 10) + tok[10:] // nearly right
	secrets := map[string]string{"bridge token": tok, "wrong token": badTok, "operator token": vigiltest.Token,
		"basic credentials": base64.StdEncoding.EncodeToString([]byte("br:" + tok)),
		"swapped basic":     base64.StdEncoding.EncodeToString([]byte(tok + ":br"))}

	// HTTP bearer, right and wrong.
	start := time.Now().Add(-time.Minute).UnixMilli()
	body := append([]byte{0, 0, 0, 16, 'f', 't', 'y', 'p', 'i', 's', 'o', 'm', 0, 0, 0, 0}, []byte{0, 0, 0, 8, 'm', 'd', 'a', 't'}...)
	if code, msg := n.Put(tok, "s1", start, body, "video/mp4"); code != 201 {
		t.Fatalf("put: %d %s", code, msg)
	}
	if code, _ := n.Put(badTok, "s1", start+2000, body, "video/mp4"); code != 401 {
		t.Fatalf("put with a wrong token: %d", code)
	}

	// Signed URL, right and tampered.
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/v1/streams/s1/playlist.m3u8?start=%d&end=%d", n.Base, start-1000, start+60000), nil)
	req.Header.Set("Authorization", "Bearer "+vigiltest.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	pl, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var signed string
	for _, l := range strings.Split(string(pl), "\n") {
		if strings.Contains(l, "sig=") {
			signed = strings.TrimSpace(l)
			if i := strings.Index(signed, "URI=\""); i >= 0 { // EXT-X-MAP
				signed = strings.TrimSuffix(signed[i+5:], "\"")
			}
			break
		}
	}
	if signed == "" {
		t.Fatalf("no signed URL in the playlist (%d):\n%s", resp.StatusCode, pl)
	}
	sig := signed[strings.Index(signed, "sig=")+4:]
	secrets["URL signature"] = sig
	base, _ := url.Parse(n.Base + "/v1/streams/s1/playlist.m3u8")
	get := func(u string) int {
		ref, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get(base.ResolveReference(ref).String())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// The fake segment has no moof, so its init section is 422: past the signature check.
	if code := get(signed); code == 401 || code == 403 || code == 429 {
		t.Fatalf("signed URL: %d", code)
	}
	tampered := strings.Replace(signed, "sig="+sig[:4], "sig=AAAA", 1)
	if code := get(tampered); code != 403 {
		t.Fatalf("tampered signed URL: %d", code)
	}

	// RTSP Basic and Digest, right and wrong, and user and password swapped.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, basic := range []bool{true, false} {
		if err := publish(ctx, n.RTSPAddr, "br", tok, "s1", basic); err != nil {
			t.Fatalf("publish (basic=%v): %v", basic, err)
		}
		for _, cred := range [][2]string{{"br", badTok}, {tok, "br"}} {
			if err := publish(ctx, n.RTSPAddr, cred[0], cred[1], "s1", basic); err == nil {
				t.Fatalf("publish with wrong credentials (basic=%v) succeeded", basic)
			}
		}
	}
	// Credentials in the request URL: a malformed request line, and an
	// authenticated ANNOUNCE of a path that is no stream id.
	r, err := dialRTSPFrom(t, n.RTSPAddr, "")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = r.conn.Write([]byte("OPTIONS rtsp://br:" + tok + "@" + n.RTSPAddr + "/s1 RTSP/1.0 x\r\nCSeq: 1\r\n\r\n"))
	r.closedWithin(5 * time.Second)
	r, err = dialRTSPFrom(t, n.RTSPAddr, "")
	if err != nil {
		t.Fatal(err)
	}
	if ans, err := r.do("ANNOUNCE", "rtsp://br:"+tok+"@"+n.RTSPAddr+"/not.a.stream", []string{basicHeader("br", tok)}, sdpH264); err != nil || ans.status != 400 {
		t.Fatalf("ANNOUNCE of a bad path: %v %+v", err, ans)
	}
	r.conn.Close()
	time.Sleep(300 * time.Millisecond)

	logs := n.Logs()
	if !strings.Contains(logs, "rtsp: ANNOUNCE refused") {
		t.Fatalf("the bad-path ANNOUNCE was not logged; the test checks nothing:\n%s", vigiltest.Tail(logs, 30))
	}
	for what, s := range secrets {
		if i := strings.Index(logs, s); i >= 0 {
			line := logs[strings.LastIndexByte(logs[:i], '\n')+1:]
			if j := strings.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
			t.Errorf("the %s is in the log: %s", what, line)
		}
	}
}

// httpFrom is an HTTP client whose connections come from the loopback address from.
func httpFrom(from string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

func metricSum(t *testing.T, n *vigiltest.Node, name, labelSubstr string) float64 {
	t.Helper()
	resp, err := http.Get(n.Base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name) && strings.Contains(l, labelSubstr) {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

// TestAuthGuessingLimited: failed authentications are limited per source
// address (HTTP 429 with Retry-After; RTSP 503 with Retry-After and the
// connection closed) also across reconnects, and per RTSP user across
// sources. A Bridge from another address still gets in, and so does a
// Bridge from its usual address while its password is guessed from many.
// While a source is refused, a right token from it is refused too (checking
// it would make the refusal an oracle). Failures are counted in a metric and
// their log lines are sampled.
func TestAuthGuessingLimited(t *testing.T) {
	n := startRTSP(t, vigiltest.Options{
		Env: []string{"VIGIL_AUTH_FAILURE_BURST=5", "VIGIL_AUTH_FAILURE_REFILL=10m", "VIGIL_AUTH_FAILURE_IDENTITY_BURST=12"}})
	tok := n.Provision("s1")
	body := append([]byte{0, 0, 0, 16, 'f', 't', 'y', 'p', 'i', 's', 'o', 'm', 0, 0, 0, 0}, []byte{0, 0, 0, 8, 'm', 'd', 'a', 't'}...)
	put := func(c *http.Client, token string, start int64) *http.Response {
		req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("%s/v1/streams/s1/segments/%d?duration_ms=2000", n.Base, start), strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "video/mp4")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	start := time.Now().Add(-time.Minute).UnixMilli()

	// HTTP: one source guesses.
	guesser := httpFrom("127.0.0.2")
	var unauthorized, limited int
	for i := range 20 {
		resp := put(guesser, fmt.Sprintf("guess-%d-%s", i, strings.Repeat("x", 32)), start)
		switch resp.StatusCode {
		case 401:
			unauthorized++
		case 429:
			limited++
			ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
			if err != nil || ra < 1 {
				t.Fatalf("429 without a Retry-After in seconds: %q", resp.Header.Get("Retry-After"))
			}
		default:
			t.Fatalf("guess %d: status %d", i, resp.StatusCode)
		}
	}
	if unauthorized > 5 || limited == 0 {
		t.Fatalf("20 wrong tokens from one address: %d answered 401, %d 429; want at most 5 checked", unauthorized, limited)
	}
	if resp := put(guesser, tok, start); resp.StatusCode != 429 {
		t.Fatalf("the right token from the refused address: %d, want 429", resp.StatusCode)
	}
	if resp := put(httpFrom("127.0.0.1"), tok, start); resp.StatusCode != 201 {
		t.Fatalf("the Bridge from another address: %d, want 201", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, n.Base+"/v1/streams/s1/recordings?start=0&end=1", nil)
	req.Header.Set("Authorization", "Bearer another-guess")
	resp, err := guesser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var e struct{ Error, Code string }
	err = json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != 429 || err != nil || e.Code == "" || e.Error == "" {
		t.Fatalf("refused guess: %d %v %+v, want 429 with a JSON error", resp.StatusCode, err, e)
	}

	// RTSP: the Bridge publishes from its usual address first.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := publish(ctx, n.RTSPAddr, "br", tok, "s1", false); err != nil {
		t.Fatal(err)
	}
	// One source guesses br's password, reconnecting after every answer.
	guess := func(from string) (rtspAnswer, bool) {
		r, err := dialRTSPFrom(t, n.RTSPAddr, from)
		if err != nil {
			t.Fatal(err)
		}
		defer r.conn.Close()
		ans, err := r.do("ANNOUNCE", r.url("s1"), []string{basicHeader("br", "wrong-"+strconv.Itoa(r.cseq))}, sdpH264)
		if err != nil {
			t.Fatalf("guess from %s: %v", from, err)
		}
		closed := ans.status == 503 && r.closedWithin(5*time.Second)
		return ans, closed
	}
	var rtspLimited bool
	for i := range 10 {
		ans, closed := guess("127.0.0.3")
		if ans.status == 401 {
			if i >= 5 {
				t.Fatalf("guess %d from one address across reconnects still checked (401)", i)
			}
			continue
		}
		if ans.status != 503 || !closed || ans.header.Get("Retry-After") == "" {
			t.Fatalf("guess %d: %+v closed=%v, want 503 with Retry-After and the connection closed", i, ans, closed)
		}
		rtspLimited = true
	}
	if !rtspLimited {
		t.Fatal("RTSP guesses never refused")
	}
	// The guessing stopped at its source: br gets in from elsewhere.
	if err := publish(ctx, n.RTSPAddr, "br", tok, "s1", true); err != nil {
		t.Fatalf("br from 127.0.0.1 while 127.0.0.3 guesses: %v", err)
	}
	// Guessing br from many sources spends br's own budget: a new source
	// claiming br is refused, br's usual address is not.
	for a := 10; a < 14; a++ {
		for range 3 {
			guess(fmt.Sprintf("127.0.0.%d", a))
		}
	}
	if ans, _ := guess("127.0.0.20"); ans.status != 503 {
		t.Fatalf("a new source claiming br after many failures for br: %+v, want 503", ans)
	}
	if err := publish(ctx, n.RTSPAddr, "br", tok, "s1", false); err != nil {
		t.Fatalf("br from its usual address while guessed from many: %v", err)
	}

	// Counted, and logged by sample: many failures from many sources at once.
	before := strings.Count(n.Logs(), "authentication failed")
	t0 := time.Now()
	const sources, each = 40, 5
	for a := range sources {
		c := httpFrom(fmt.Sprintf("127.0.1.%d", a+1))
		for range each {
			put(c, "flood-"+strings.Repeat("y", 40), start)
		}
	}
	elapsed := time.Since(t0)
	lines := strings.Count(n.Logs(), "authentication failed") - before
	// The next line after the sample's pause says how many were left out.
	time.Sleep(1100 * time.Millisecond)
	put(httpFrom("127.0.2.1"), "after-the-flood-"+strings.Repeat("z", 30), start)
	if got := metricSum(t, n, "vigil_auth_failures_total", `proto="http"`); got < sources*each {
		t.Fatalf("vigil_auth_failures_total{proto=http} = %v, want at least %d", got, sources*each)
	}
	if got := metricSum(t, n, "vigil_auth_failures_total", `proto="rtsp"`); got < 5 {
		t.Fatalf("vigil_auth_failures_total{proto=rtsp} = %v, want at least 5", got)
	}
	if got := metricSum(t, n, "vigil_auth_throttled_total", ""); got == 0 {
		t.Fatal("vigil_auth_throttled_total stayed 0")
	}
	if limit := 10 + int(elapsed.Seconds()) + 2; lines > limit {
		t.Fatalf("%d failures logged %d lines in %v, want at most %d (sampled)", sources*each, lines, elapsed, limit)
	}
	if !strings.Contains(n.Logs(), "suppressed=") {
		t.Fatal("sampled failure lines do not say how many were suppressed")
	}
}
