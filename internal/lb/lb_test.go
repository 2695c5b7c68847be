package lb

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// backend is an HTTP server that says its name and can turn unready.
func backend(t *testing.T, name string, ready *atomic.Bool) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" && !ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, name)
	}))
	t.Cleanup(s.Close)
	return s
}

func get(t *testing.T, h http.Handler) (int, string, http.Header) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/x", nil))
	return rec.Code, rec.Body.String(), rec.Header()
}

func TestRoundRobinOverHealthy(t *testing.T) {
	var aReady, bReady atomic.Bool
	aReady.Store(true)
	bReady.Store(true)
	a, b := backend(t, "a", &aReady), backend(t, "b", &bReady)
	bal := New([]*Backend{{HTTP: a.Listener.Addr().String()}, {HTTP: b.Listener.Addr().String()}}, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	bal.Check(ctx)
	seen := map[string]int{}
	for range 10 {
		code, body, _ := get(t, bal)
		if code != http.StatusOK {
			t.Fatalf("status %d", code)
		}
		seen[body]++
	}
	if seen["a"] != 5 || seen["b"] != 5 {
		t.Fatalf("not round robin: %v", seen)
	}

	// An unready backend gets nothing.
	aReady.Store(false)
	bal.Check(ctx)
	for range 4 {
		if _, body, _ := get(t, bal); body != "b" {
			t.Fatalf("request went to %q, an unready backend", body)
		}
	}

	// None ready: 503 with Retry-After and the contract's JSON error.
	bReady.Store(false)
	bal.Check(ctx)
	code, body, h := get(t, bal)
	var e struct{ Error, Code string }
	if code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || json.Unmarshal([]byte(body), &e) != nil || e.Code != "no_backend" {
		t.Fatalf("no backend: %d %q %v", code, body, h)
	}
}

// A backend that is gone answers 502 bad_gateway and is skipped after.
func TestDeadBackend(t *testing.T) {
	var ready atomic.Bool
	ready.Store(true)
	live := backend(t, "live", &ready)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // nothing listens there now
	bal := New([]*Backend{{HTTP: dead}, {HTTP: live.Listener.Addr().String()}}, slog.New(slog.DiscardHandler))
	codes := map[int]int{}
	for range 4 {
		code, body, _ := get(t, bal)
		codes[code]++
		if code == http.StatusBadGateway && !strings.Contains(body, `"code":"bad_gateway"`) {
			t.Fatalf("502 body %q", body)
		}
	}
	if codes[http.StatusBadGateway] != 1 || codes[http.StatusOK] != 3 {
		t.Fatalf("statuses %v: want one 502, then the live backend only", codes)
	}
}

func TestRTSPPipe(t *testing.T) {
	// An echo server stands in for an RTSP listener.
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	bal := New([]*Backend{{HTTP: "127.0.0.1:1"}, {HTTP: "127.0.0.1:1", RTSP: up.Addr().String()}}, slog.New(slog.DiscardHandler))
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = bal.ServeRTSP(front) }()
	defer front.Close()
	for range 3 { // every connection reaches the one backend with RTSP
		c, err := net.Dial("tcp", front.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, "OPTIONS rtsp://x/ RTSP/1.0\r\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || line != "OPTIONS rtsp://x/ RTSP/1.0\r\n" {
			t.Fatalf("echo through the balancer: %q %v", line, err)
		}
	}
}

// A client whose body breaks off gets an error, and the healthy backend
// stays in rotation.
func TestBrokenClientBodyKeepsBackend(t *testing.T) {
	var ready atomic.Bool
	ready.Store(true)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}))
	defer s.Close()
	bal := New([]*Backend{{HTTP: s.Listener.Addr().String()}}, slog.New(slog.DiscardHandler))
	req := httptest.NewRequest(http.MethodPut, "/v1/streams/x/segments/1", io.MultiReader(strings.NewReader("abc"), errReader{}))
	req.ContentLength = 100
	rec := httptest.NewRecorder()
	bal.ServeHTTP(rec, req)
	if rec.Code == http.StatusOK {
		t.Fatalf("a broken body was proxied as a success")
	}
	if code, body, _ := get(t, bal); code != http.StatusOK || body != "ok" {
		t.Fatalf("after a broken client body: %d %q; the backend should still serve", code, body)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }
