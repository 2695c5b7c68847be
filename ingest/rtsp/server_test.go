package rtsp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vigilcloud/vigil/internal/testutil"
)

func dial(t *testing.T, url string) *Client {
	t.Helper()
	c, err := Dial(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recordSession announces one H.264 media, sets it up and starts RECORD.
func recordSession(t *testing.T, c *Client, tcp bool) {
	t.Helper()
	ctx := context.Background()
	if err := c.Announce(ctx, []Media{h264Media()}); err != nil {
		t.Fatal(err)
	}
	if err := c.Setup(ctx, 0, tcp); err != nil {
		t.Fatal(err)
	}
	if err := c.Record(ctx); err != nil {
		t.Fatal(err)
	}
}

func sendPackets(t *testing.T, c *Client, n int, seq0 uint16) {
	t.Helper()
	for i := 0; i < n; i++ {
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq0 + uint16(i),
			Timestamp: uint32(i) * 3600, SSRC: 1}, Payload: []byte{0x65, 1, 2, 3}}
		if err := c.WriteRTP(0, pkt); err != nil {
			t.Fatal(err)
		}
	}
}

func statusOf(t *testing.T, err error) int {
	t.Helper()
	var se *StatusError
	if !errors.As(err, &se) {
		t.Fatalf("want a status error, got %v", err)
	}
	return se.Status
}

func TestClientBasicAuthTCP(t *testing.T) {
	h := newTestHandler()
	ts := startServer(t, Config{}, h)
	c := dial(t, ts.url("br", "token", "cam1"))
	c.PreferBasic = true
	recordSession(t, c, true)
	sendPackets(t, c, 90, 65500) // wraps around
	var batch []*rtp.Packet
	for i := 0; i < 10; i++ {
		batch = append(batch, &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(65590-65536) + uint16(i), SSRC: 1},
			Payload: []byte{0x41, byte(i)}})
	}
	if err := c.WritePackets(0, batch); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteRTCP(0, []rtcp.Packet{&rtcp.SenderReport{SSRC: 1, NTPTime: 1 << 40, RTPTime: 0}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Teardown(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, sinks, basic, digest := h.snapshot()
	if err := sinks[0].waitClosed(t); err != nil {
		t.Fatalf("close reason %v after TEARDOWN", err)
	}
	packets, gaps, rtcpN, srs := sinks[0].counts()
	if packets[0] != 100 || gaps[0] != 0 || rtcpN != 1 || srs != 1 {
		t.Fatalf("packets %v gaps %v rtcp %d srs %d", packets, gaps, rtcpN, srs)
	}
	if basic != 1 || digest != 0 {
		t.Fatalf("basic %d digest %d, want one Basic check", basic, digest)
	}
	if got := metricValue(ts.m.tcpRTP); got != 100 {
		t.Fatalf("tcp rtp packets metric %v", got)
	}
}

func TestClientDigestUDP(t *testing.T) {
	h := newTestHandler()
	ts := startServer(t, Config{}, h)
	c := dial(t, ts.url("br", "token", "cam1"))
	recordSession(t, c, false)
	_, sinks, basic, digest := h.snapshot()
	if basic != 0 || digest != 1 {
		t.Fatalf("basic %d digest %d, want Digest", basic, digest)
	}
	// A datagram from a port the session did not announce is dropped.
	stranger, err := net.DialUDP("udp", nil, c.tracks[0].serverRTP)
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	b, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: 9}, Payload: []byte{1}}).Marshal()
	if _, err := stranger.Write(b); err != nil {
		t.Fatal(err)
	}
	eventually(t, "stranger datagram dropped", func() bool { return metricValue(ts.m.udpDropped) >= 1 })
	// Send and wait in small batches so loopback UDP does not drop.
	for i := 0; i < 5; i++ {
		sendPackets(t, c, 10, uint16(i*10))
		eventually(t, "udp packets", func() bool { p, _, _, _ := sinks[0].counts(); return p[0] == (i+1)*10 })
	}
	if err := c.WriteRTCP(0, []rtcp.Packet{&rtcp.SenderReport{SSRC: 1}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "udp rtcp", func() bool { _, _, r, _ := sinks[0].counts(); return r == 1 })
	// Sequence gaps are counted as lost.
	sendPackets(t, c, 1, 60)
	eventually(t, "loss counted", func() bool { return metricValue(ts.m.lost) == 10 })
	c.Close()
	if err := sinks[0].waitClosed(t); !errors.Is(err, errDisconnected) {
		t.Fatalf("close reason %v, want disconnect", err)
	}
}

func TestDigestWrongResponseAndUnknownUser(t *testing.T) {
	h := newTestHandler()
	ts := startServer(t, Config{}, h)
	for _, u := range [][2]string{{"br", "nope"}, {"ghost", "token"}} {
		for _, basic := range []bool{false, true} {
			c := dial(t, ts.url(u[0], u[1], "cam1"))
			c.PreferBasic = basic
			err := c.Announce(context.Background(), []Media{h264Media()})
			if st := statusOf(t, err); st != 401 {
				t.Fatalf("%v basic=%v: status %d", u, basic, st)
			}
		}
	}
	// A forged nonce is refused before the handler is asked.
	c := dial(t, ts.url("", "", "cam1"))
	r, err := c.Do(context.Background(), "ANNOUNCE", c.URL(), [][2]string{
		{"Authorization", `Digest username="br", realm="vigil", nonce="00", uri="x", response="y"`},
		{"Content-Type", "application/sdp"}}, MarshalSDP([]Media{h264Media()}))
	if err != nil || r.Status != 401 {
		t.Fatalf("forged nonce: %v %+v", err, r)
	}
	if ann, _, _, _ := h.snapshot(); len(ann) != 0 {
		t.Fatalf("%d announces", len(ann))
	}
	if got := metricValue(ts.m.refused.WithLabelValues("unauthorized")); got != 5 {
		t.Fatalf("refused{unauthorized} = %v, want 5", got)
	}
}

func TestHandlerErrorsMapToStatus(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
	}{
		{ErrForbidden, 403}, {ErrNotFound, 404}, {ErrBusy, 455}, {ErrUnsupported, 415},
		{ErrUnauthorized, 401}, {fmt.Errorf("registry: %w", errors.New("down")), 503},
	} {
		h := newTestHandler()
		h.announceErr = tc.err
		ts := startServer(t, Config{}, h)
		c := dial(t, ts.url("br", "token", "cam1"))
		err := c.Announce(context.Background(), []Media{h264Media()})
		if st := statusOf(t, err); st != tc.status {
			t.Fatalf("%v: status %d, want %d", tc.err, st, tc.status)
		}
		if tc.err == ErrBusy && !strings.Contains(err.Error(), "Already Publishing") {
			t.Fatalf("busy reason: %v", err)
		}
	}
}

// TestSessionLimit: MaxSessions counts authenticated sessions; a publisher
// that authenticates beyond it gets 503, and one gets in once a slot frees.
func TestSessionLimit(t *testing.T) {
	h := newTestHandler()
	ts := startServer(t, Config{MaxSessions: 1}, h)
	c1 := dial(t, ts.url("br", "token", "a"))
	if err := c1.Announce(context.Background(), []Media{h264Media()}); err != nil {
		t.Fatalf("first session: %v", err)
	}
	c2 := dial(t, ts.url("br", "token", "b"))
	if r, err := c2.Options(context.Background()); err != nil || r.Status != 200 {
		t.Fatalf("an unauthenticated connection does not take a session: %v %+v", err, r)
	}
	r, err := c2.Do(context.Background(), "ANNOUNCE", c2.URL(), [][2]string{{"Content-Type", "application/sdp"}}, MarshalSDP([]Media{h264Media()}))
	if err != nil || r.Status != 503 || r.Reason != "Session Limit Reached" || !strings.Contains(string(r.Body), "at most 1") {
		t.Fatalf("second session: %v %+v", err, r)
	}
	readUntilClosed(t, c2.Conn())
	if got := metricValue(ts.m.refused.WithLabelValues("session_limit")); got != 1 {
		t.Fatalf("refused{session_limit} = %v", got)
	}
	c1.Close()
	eventually(t, "slot freed", func() bool {
		c3, err := Dial(context.Background(), ts.url("br", "token", "c"))
		if err != nil {
			return false
		}
		defer c3.Close()
		return c3.Announce(context.Background(), []Media{h264Media()}) == nil
	})
}

func TestIdleTimeout(t *testing.T) {
	h := newTestHandler()
	ts := startServer(t, Config{IdleTimeout: 300 * time.Millisecond}, h)
	c := dial(t, ts.url("br", "token", "cam1"))
	recordSession(t, c, true)
	_, sinks, _, _ := h.snapshot()
	if err := sinks[0].waitClosed(t); !errors.Is(err, ErrIdle) {
		t.Fatalf("close reason %v, want idle timeout", err)
	}
	readUntilClosed(t, c.Conn())
	eventually(t, "session gauge back to 0", func() bool { return metricValue(ts.m.sessions) == 0 })
}

// TestKeepaliveAndPacketsHoldIdle: GET_PARAMETER keepalives and packets keep
// a session past the idle timeout.
func TestKeepaliveHoldsIdle(t *testing.T) {
	testutil.SkipIfShort(t, "keepalives for 2.4 s")
	h := newTestHandler()
	// Keepalives span well past the timeout, each far inside it, so that a
	// loaded machine's scheduling delays cannot pass for idleness.
	ts := startServer(t, Config{IdleTimeout: 1500 * time.Millisecond}, h)
	c := dial(t, ts.url("br", "token", "cam1"))
	recordSession(t, c, true)
	for i := 0; i < 8; i++ {
		time.Sleep(300 * time.Millisecond)
		r, err := c.Do(context.Background(), "GET_PARAMETER", c.URL(), nil, nil)
		if err != nil || r.Status != 200 {
			t.Fatalf("keepalive %d: %v %+v", i, err, r)
		}
	}
	_, sinks, _, _ := h.snapshot()
	select {
	case <-sinks[0].closed:
		t.Fatal("session closed despite keepalives")
	default:
	}
}

func TestStateErrors(t *testing.T) {
	h := newTestHandler()
	ts := startServer(t, Config{}, h)
	ctx := context.Background()
	c := dial(t, ts.url("br", "token", "cam1"))
	// SETUP and RECORD before ANNOUNCE.
	if r, err := c.Do(ctx, "RECORD", c.URL(), nil, nil); err != nil || r.Status != 455 {
		t.Fatalf("RECORD before ANNOUNCE: %v %+v", err, r)
	}
	if err := c.Announce(ctx, []Media{h264Media(), {Type: "audio", Codec: "OPUS", PayloadType: 97, ClockRate: 48000, Channels: 2}}); err != nil {
		t.Fatal(err)
	}
	if st := statusOf(t, c.Announce(ctx, []Media{h264Media()})); st != 455 {
		t.Fatalf("second ANNOUNCE: %d", st)
	}
	if r, err := c.Do(ctx, "RECORD", c.URL(), nil, nil); err != nil || r.Status != 455 || r.Reason != "RECORD Before SETUP" {
		t.Fatalf("RECORD before SETUP: %v %+v", err, r)
	}
	if err := c.Setup(ctx, 0, true); err != nil {
		t.Fatal(err)
	}
	if st := statusOf(t, c.Setup(ctx, 0, true)); st != 455 {
		t.Fatalf("duplicate SETUP: %d", st)
	}
	// A track that was not announced, and a wrong session id.
	if r, err := c.Do(ctx, "SETUP", c.URL()+"/trackID=7", [][2]string{{"Transport", "RTP/AVP/TCP;interleaved=4-5"}}, nil); err != nil || r.Status != 404 {
		t.Fatalf("unknown track: %v %+v", err, r)
	}
	sess := c.session
	c.session = "bogus"
	if r, err := c.Do(ctx, "RECORD", c.URL(), nil, nil); err != nil || r.Status != 454 {
		t.Fatalf("wrong session: %v %+v", err, r)
	}
	c.session = sess
	// Multicast and unknown transports are refused; interleaved channels in use too.
	for _, tr := range []string{"RTP/AVP;multicast", "RAW/RAW/UDP;unicast", "RTP/AVP/TCP;interleaved=0-1"} {
		if r, err := c.Do(ctx, "SETUP", c.URL()+"/trackID=1", [][2]string{{"Transport", tr}}, nil); err != nil || r.Status != 461 {
			t.Fatalf("transport %q: %v %+v", tr, err, r)
		}
	}
	if r, err := c.Do(ctx, "PLAY", c.URL(), nil, nil); err != nil || r.Status != 405 {
		t.Fatalf("PLAY: %v %+v", err, r)
	}
	if r, err := c.Do(ctx, "FROB", c.URL(), nil, nil); err != nil || r.Status != 501 {
		t.Fatalf("FROB: %v %+v", err, r)
	}
	if err := c.Record(ctx); err != nil {
		t.Fatal(err)
	}
	if st := statusOf(t, c.Setup(ctx, 1, true)); st != 455 {
		t.Fatalf("SETUP while recording: %d", st)
	}
	sendPackets(t, c, 3, 0)
	if err := c.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	_, sinks, _, _ := h.snapshot()
	if err := sinks[0].waitClosed(t); err != nil {
		t.Fatal(err)
	}
	if p, _, _, _ := sinks[0].counts(); p[0] != 3 || p[1] != 0 {
		t.Fatalf("packets %v", p)
	}
}

func TestCSeq(t *testing.T) {
	ts := startServer(t, Config{}, newTestHandler())
	c, err := net.Dial("tcp", ts.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl := &Client{conn: c}
	cl.br = newReader(c)
	send := func(cseq string) *Response {
		t.Helper()
		req := "OPTIONS rtsp://x/cam RTSP/1.0\r\n"
		if cseq != "" {
			req += "CSeq: " + cseq + "\r\n"
		}
		if _, err := c.Write([]byte(req + "\r\n")); err != nil {
			t.Fatal(err)
		}
		r, err := cl.readResponse("OPTIONS")
		if r == nil {
			t.Fatal(err)
		}
		return r
	}
	if r := send("5"); r.Status != 200 || r.Header.Get("Cseq") != "5" {
		t.Fatalf("%+v", r)
	}
	if r := send("3"); r.Status != 400 || r.Reason != "CSeq Not Increasing" || r.Header.Get("Cseq") != "3" {
		t.Fatalf("lower CSeq: %+v", r)
	}
	if r := send("5"); r.Status != 400 {
		t.Fatalf("repeated CSeq: %+v", r)
	}
	if r := send(""); r.Status != 400 {
		t.Fatalf("missing CSeq: %+v", r)
	}
	if r := send("6"); r.Status != 200 {
		t.Fatalf("after bad CSeqs: %+v", r)
	}
}

// TestBadInputClosesSession: garbage, oversized headers and bodies, bad
// SDP, bad stream ids, truncated and malformed interleaved frames.
func TestBadInputClosesSession(t *testing.T) {
	h := newTestHandler()
	ts := startServer(t, Config{MaxRequestBytes: 4096}, h)
	raw := func(payload string) string {
		t.Helper()
		c, err := net.Dial("tcp", ts.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(payload)); err != nil {
			t.Fatal(err)
		}
		// Half-close: a truncated message then meets EOF at the server.
		_ = c.(*net.TCPConn).CloseWrite()
		return readUntilClosed(t, c)
	}
	for name, tc := range map[string]struct{ in, want string }{
		"garbage":        {"HELLO\r\n\r\n", "RTSP/1.0 400 Bad Request"},
		"binary":         {"\x00\x01\x02\xff\xfe\r\n\r\n", "RTSP/1.0 400"},
		"http":           {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "RTSP/1.0 400"},
		"bad header":     {"OPTIONS rtsp://x/a RTSP/1.0\r\nCSeq 1\r\n\r\n", "RTSP/1.0 400"},
		"long header":    {"OPTIONS rtsp://x/a RTSP/1.0\r\nCSeq: 1\r\nX-Pad: " + strings.Repeat("a", 5000) + "\r\n\r\n", "400 Request Header Too Large"},
		"many headers":   {"OPTIONS rtsp://x/a RTSP/1.0\r\n" + strings.Repeat("X: y\r\n", 1000) + "\r\n", "400 Request Header Too Large"},
		"huge body":      {"ANNOUNCE rtsp://x/a RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 100000\r\n\r\n", "413"},
		"bad length":     {"ANNOUNCE rtsp://x/a RTSP/1.0\r\nCSeq: 1\r\nContent-Length: -4\r\n\r\n", "400"},
		"truncated body": {"ANNOUNCE rtsp://x/a RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 50\r\n\r\nv=0", ""},
		"empty frame":    {"$\x00\x00\x00", ""},
		"truncated":      {"$\x00\x00\x10abc", ""},
	} {
		got := raw(tc.in)
		if !strings.HasPrefix(got, tc.want) && !strings.Contains(got, tc.want) || tc.want == "" && got != "" {
			t.Errorf("%s: got %q, want %q", name, got, tc.want)
		}
	}
	ctx := context.Background()
	c := dial(t, ts.url("br", "token", "bad.path"))
	if st := statusOf(t, c.Announce(ctx, []Media{h264Media()})); st != 400 {
		t.Fatalf("bad stream id: %d", st)
	}
	c = dial(t, ts.url("br", "token", strings.Repeat("a", 65)))
	if st := statusOf(t, c.Announce(ctx, []Media{h264Media()})); st != 400 {
		t.Fatalf("65-char stream id: %d", st)
	}
	c = dial(t, ts.url("br", "token", "cam1"))
	r, err := c.Do(ctx, "ANNOUNCE", c.URL(), [][2]string{{"Content-Type", "application/sdp"}}, []byte("v=0\r\nthis is not sdp\r\n"))
	if err != nil || r.Status != 400 || r.Reason != "Malformed SDP" {
		t.Fatalf("bad SDP: %v %+v", err, r)
	}
	readUntilClosed(t, c.Conn())
	if ann, _, _, _ := h.snapshot(); len(ann) != 0 {
		t.Fatalf("%d announces from bad input", len(ann))
	}

	// Truncated interleaved frame mid-recording: the session ends with that reason.
	c = dial(t, ts.url("br", "token", "cam1"))
	recordSession(t, c, true)
	sendPackets(t, c, 5, 0)
	if _, err := c.Conn().Write([]byte("$\x00\x04\x00only-a-little")); err != nil {
		t.Fatal(err)
	}
	c.Conn().(*net.TCPConn).CloseWrite()
	_, sinks, _, _ := h.snapshot()
	if err := sinks[0].waitClosed(t); err == nil || !strings.Contains(err.Error(), "interleaved frame of 1024 bytes") {
		t.Fatalf("truncated frame: close reason %v", err)
	}
	// A frame too short to be RTP on an RTP channel.
	c = dial(t, ts.url("br", "token", "cam2"))
	recordSession(t, c, true)
	if _, err := c.Conn().Write([]byte("$\x00\x00\x03abc")); err != nil {
		t.Fatal(err)
	}
	_, sinks, _, _ = h.snapshot()
	if err := sinks[1].waitClosed(t); !errors.Is(err, errMalformed) {
		t.Fatalf("malformed RTP: close reason %v", err)
	}
	readUntilClosed(t, c.Conn())
}

func TestSinkErrorEndsSession(t *testing.T) {
	h := newTestHandler()
	h.writeErr = errors.New("segmenter: bad NAL")
	ts := startServer(t, Config{}, h)
	c := dial(t, ts.url("br", "token", "cam1"))
	recordSession(t, c, true)
	sendPackets(t, c, 1, 0)
	_, sinks, _, _ := h.snapshot()
	if err := sinks[0].waitClosed(t); err == nil || !strings.Contains(err.Error(), "bad NAL") {
		t.Fatalf("close reason %v", err)
	}
	readUntilClosed(t, c.Conn())
}

func TestShutdownClosesSinks(t *testing.T) {
	h := newTestHandler()
	ts := startServer(t, Config{}, h)
	ctx := context.Background()
	var clients []*Client
	for i := 0; i < 3; i++ {
		c := dial(t, ts.url("br", "token", fmt.Sprintf("cam%d", i)))
		recordSession(t, c, i%2 == 0)
		clients = append(clients, c)
	}
	// One announced but never recording: its sink is closed too.
	c := dial(t, ts.url("br", "token", "idle"))
	if err := c.Announce(ctx, []Media{h264Media()}); err != nil {
		t.Fatal(err)
	}
	clients = append(clients, c)
	ts.stop(t)
	_, sinks, _, _ := h.snapshot()
	for i, s := range sinks {
		if err := s.waitClosed(t); !errors.Is(err, ErrShutdown) {
			t.Fatalf("sink %d closed with %v", i, err)
		}
	}
	for _, c := range clients {
		readUntilClosed(t, c.Conn())
	}
	if _, err := net.DialTimeout("tcp", ts.Addr().String(), time.Second); err == nil {
		t.Fatal("listener still accepting after shutdown")
	}
}

func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// TestStalledRequestTimesOut: half a request and then silence (slowloris)
// is closed by the idle timeout; so is a connection that keeps guessing passwords.
func TestStalledRequestAndPasswordGuessing(t *testing.T) {
	h := newTestHandler()
	ts := startServer(t, Config{IdleTimeout: 300 * time.Millisecond}, h)
	c, err := net.Dial("tcp", ts.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("OPTIONS rtsp://x/a RTSP/1.0\r\nCSeq: 1\r\n")); err != nil {
		t.Fatal(err)
	}
	if got := readUntilClosed(t, c); got != "" {
		t.Fatalf("answered a half request: %q", got)
	}

	ts2 := startServer(t, Config{}, h)
	cl := dial(t, ts2.url("br", "guess", "cam1"))
	cl.PreferBasic = true
	// Every wrong answer gets a 401; after maxAuthFailures the server hangs up.
	for i := 0; ; i++ {
		err := cl.Announce(context.Background(), []Media{h264Media()})
		var se *StatusError
		if !errors.As(err, &se) {
			break // the connection was closed
		}
		if se.Status != 401 || i > maxAuthFailures {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	readUntilClosed(t, cl.Conn())
}
