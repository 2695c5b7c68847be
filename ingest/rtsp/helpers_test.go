package rtsp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"
)

// testHandler records what the server asks. Users maps bridge id to token.
type testHandler struct {
	users       map[string]string
	announceErr error // returned by Announce when set
	writeErr    error // returned by every sink's WriteRTP when set

	mu          sync.Mutex
	basicCalls  int
	digestCalls int
	announces   []announced
	sinks       []*testSink
}

type announced struct {
	user, path string
	medias     []Media
}

func newTestHandler() *testHandler {
	return &testHandler{users: map[string]string{"br": "token"}}
}

func (h *testHandler) CheckPassword(_ context.Context, user, password string) error {
	h.mu.Lock()
	h.basicCalls++
	h.mu.Unlock()
	if p, ok := h.users[user]; !ok || p != password {
		return ErrUnauthorized
	}
	return nil
}

func (h *testHandler) DigestHA1(_ context.Context, user, realm string) (string, error) {
	h.mu.Lock()
	h.digestCalls++
	h.mu.Unlock()
	p, ok := h.users[user]
	if !ok {
		return "", ErrUnauthorized
	}
	return md5hex(user + ":" + realm + ":" + p), nil
}

func (h *testHandler) Announce(_ context.Context, user, path string, medias []Media) (Sink, error) {
	if h.announceErr != nil {
		return nil, h.announceErr
	}
	s := &testSink{medias: medias, packets: make([]int, len(medias)), gaps: make([]int, len(medias)),
		lastSeq: make([]int, len(medias)), closed: make(chan struct{}), writeErr: h.writeErr}
	for i := range s.lastSeq {
		s.lastSeq[i] = -1
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.announces = append(h.announces, announced{user, path, medias})
	h.sinks = append(h.sinks, s)
	return s, nil
}

func (h *testHandler) snapshot() (announces []announced, sinks []*testSink, basic, digest int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]announced(nil), h.announces...), append([]*testSink(nil), h.sinks...), h.basicCalls, h.digestCalls
}

type testSink struct {
	medias   []Media
	writeErr error

	mu         sync.Mutex
	packets    []int
	gaps       []int
	lastSeq    []int
	rtcp       int
	srs        int
	closeCount int
	closeErr   error
	closed     chan struct{}
}

func (s *testSink) WriteRTP(media int, pkt *rtp.Packet, _ time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closeCount > 0 {
		panic("WriteRTP after Close")
	}
	s.packets[media]++
	if l := s.lastSeq[media]; l >= 0 && uint16(l+1) != pkt.SequenceNumber {
		s.gaps[media]++
	}
	s.lastSeq[media] = int(pkt.SequenceNumber)
	return s.writeErr
}

func (s *testSink) WriteRTCP(_ int, pkts []rtcp.Packet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rtcp++
	for _, p := range pkts {
		if _, ok := p.(*rtcp.SenderReport); ok {
			s.srs++
		}
	}
}

func (s *testSink) Close(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeCount++
	s.closeErr = err
	if s.closeCount == 1 {
		close(s.closed)
	}
}

func (s *testSink) waitClosed(t *testing.T) error {
	t.Helper()
	select {
	case <-s.closed:
	case <-time.After(30 * time.Second):
		t.Fatal("sink not closed within 30 s")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closeCount != 1 {
		t.Fatalf("Close called %d times", s.closeCount)
	}
	return s.closeErr
}

func (s *testSink) counts() (packets, gaps []int, rtcpN, srs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.packets...), append([]int(nil), s.gaps...), s.rtcp, s.srs
}

type testServer struct {
	*Server
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startServer runs a server on loopback (TCP and a UDP pair) until the test ends.
func startServer(t *testing.T, cfg Config, h Handler) *testServer {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.UDPRTPAddr == "" {
		cfg.UDPRTPAddr, cfg.UDPRTCPAddr = "127.0.0.1:0", "127.0.0.1:0"
	}
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := NewServer(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: s, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ctx) }()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

func (ts *testServer) stop(t *testing.T) {
	ts.once.Do(func() {
		ts.cancel()
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Serve did not return within 30 s of shutdown")
		}
	})
}

func (ts *testServer) url(user, pass, path string) string {
	u := "rtsp://"
	if user != "" {
		u += user + ":" + pass + "@"
	}
	return u + ts.Addr().String() + "/" + path
}

// testWriter sends server logs to the test log (shown on failure or -v).
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	if os.Getenv("RTSP_TEST_LOGS") != "" {
		w.t.Log(string(p))
	}
	return len(p), nil
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readUntilClosed reads from c until the server closes it and returns what it read.
func readUntilClosed(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("server did not close the connection; read %q", b)
	}
	return string(b)
}

func h264Media() Media {
	return Media{Type: "video", Codec: "H264", PayloadType: 96, ClockRate: 90000,
		Fmtp: map[string]string{"packetization-mode": "1", "sprop-parameter-sets": "Z0LAHtkDxWhAAAADAEAAAAwDxYuS,aMuMsg=="}}
}
