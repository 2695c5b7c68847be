package httpx

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestCloseUnreadAnswersAStalledBody: a handler that refuses a request
// without reading its body is answered (with Connection: close) although
// the client never sends the rest of the body; a handler that reads the
// body keeps the connection.
func TestCloseUnreadAnswersAStalledBody(t *testing.T) {
	srv := httptest.NewServer(CloseUnread(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/read" {
			_, _ = io.Copy(io.Discard, r.Body)
			WriteJSON(w, http.StatusOK, "ok")
			return
		}
		WriteError(w, http.StatusServiceUnavailable, "overloaded", "no")
	})))
	defer srv.Close()

	c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "PUT /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a refused request with a stalled body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !resp.Close {
		t.Fatalf("got %d close=%v, want 503 and Connection: close", resp.StatusCode, resp.Close)
	}

	resp, err = http.Post(srv.URL+"/read", "text/plain", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("got %d close=%v, want 200 on a kept connection", resp.StatusCode, resp.Close)
	}
}
