package connlimit

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

func serve(t *testing.T, cfg Config, h http.Handler) (addr string, cl *Listener) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl = New(l, cfg)
	srv := &http.Server{Handler: h, ConnState: cl.ConnState}
	go func() { _ = srv.Serve(cl) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String(), cl
}

// get sends GET path on c and returns the status, or an error.
func get(c net.Conn, path string) (int, error) {
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return 0, err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func closedByPeer(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// TestTotalCapEvictsIdleThenRejects: at the total cap a new connection
// closes the longest-idle one; with none idle, the new one is closed.
func TestTotalCapEvictsIdleThenRejects(t *testing.T) {
	block, entered := make(chan struct{}), make(chan struct{}, 2)
	defer close(block)
	addr, cl := serve(t, Config{MaxConns: 2}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			entered <- struct{}{}
			<-block
		}
	}))
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// a goes idle before b does (the server marks a connection so just
	// after answering on it): a third connection then closes a.
	waiting := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			cl.mu.Lock()
			got := len(cl.waiting)
			cl.mu.Unlock()
			if got == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d connections waiting, want %d", got, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	a := dial()
	if code, err := get(a, "/"); err != nil || code != 200 {
		t.Fatalf("get: %d %v", code, err)
	}
	waiting(1)
	b := dial()
	if code, err := get(b, "/"); err != nil || code != 200 {
		t.Fatalf("get: %d %v", code, err)
	}
	waiting(2)
	c := dial()
	if code, err := get(c, "/"); err != nil || code != 200 {
		t.Fatalf("get over the cap with idle connections: %d %v", code, err)
	}
	if !closedByPeer(a) {
		t.Fatal("the longest-idle connection was not closed")
	}
	// b and c busy: a fourth connection is refused.
	for _, c := range []net.Conn{b, c} {
		if _, err := io.WriteString(c, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	<-entered
	<-entered
	// Refused: reset during the dial already, or closed unanswered.
	if d, err := net.Dial("tcp", addr); err == nil {
		defer d.Close()
		if _, err := get(d, "/"); err == nil {
			t.Fatal("a connection over the cap with none idle was served")
		}
	}
}

// TestDefaultMaxConns: the total cap leaves descriptors for the rest of the
// process (a quarter of the open-file limit), and is never below 64.
func TestDefaultMaxConns(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 || rl.Cur < 256 {
		t.Skip("open-file limit unusable for this check")
	}
	got := DefaultMaxConns()
	if spare := int(rl.Cur) - got; got < 64 || spare < int(rl.Cur)/4 {
		t.Fatalf("DefaultMaxConns() = %d with an open-file limit of %d", got, rl.Cur)
	}
}
