package hostile

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/internal/vigiltest"
)

// fmp4 is a small well-formed fMP4 body (ftyp + mdat) of about size bytes.
func fmp4(size int) []byte {
	b := []byte{0, 0, 0, 16, 'f', 't', 'y', 'p', 'i', 's', 'o', 'm', 0, 0, 0, 0}
	n := max(size-len(b), 8)
	m := make([]byte, n)
	m[0], m[1], m[2], m[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	copy(m[4:], "mdat")
	return append(b, m...)
}

// put uploads body with a client that gives up after timeout: a bounded
// wait for the node's answer, not a latency assertion.
func put(n *vigiltest.Node, token, stream string, start int64, body []byte, timeout time.Duration) (*http.Response, string, error) {
	req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("%s/v1/streams/%s/segments/%d?duration_ms=2000", n.Base, stream, start), bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "video/mp4")
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b), nil
}

// gauge reads one sample of /metrics, e.g. `vigil_ingest_inflight{class="live"}`.
func gauge(t *testing.T, n *vigiltest.Node, sample string) (float64, bool) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(n.Base + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// eventually polls cond for up to limit.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s after %s", what, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStalledUploadsDoNotBlockOtherBridges: one bridge opens 20 live PUTs,
// sends 1 KiB of each body and then nothing. It may hold only its share of
// the 8 live slots; another account's bridge still stores live video at
// once; the stalled uploads are ended by the body deadline (408) and every
// slot is free again.
func TestStalledUploadsDoNotBlockOtherBridges(t *testing.T) {
	n := vigiltest.Start(t, vigilBin, vigiltest.Options{Args: []string{
		"--live-concurrency", "8", "--bridge-share", "0.25", "--upload-idle-timeout", "2s",
	}})
	tokA := n.Provision("sa")
	tokB := n.ProvisionBridge("acct2", "br2", "cam2", "sb")

	const stalled = 20
	body := fmp4(64 << 10)
	type answer struct {
		status int
		err    error
	}
	answers := make(chan answer, stalled)
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	base := time.Now().Add(-time.Minute).UnixMilli()
	for i := range stalled {
		c, err := net.Dial("tcp", n.HTTPAddr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		_, err = fmt.Fprintf(c, "PUT /v1/streams/sa/segments/%d?duration_ms=2000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: video/mp4\r\nContent-Length: %d\r\n\r\n", base+int64(i)*2000, tokA, len(body))
		if err == nil {
			_, err = c.Write(body[:1024])
		}
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				answers <- answer{err: err}
				return
			}
			resp.Body.Close()
			answers <- answer{status: resp.StatusCode}
		}()
	}
	eventually(t, 10*time.Second, "the stalled uploads to hold slots", func() bool {
		v, _ := gauge(t, n, `vigil_ingest_inflight{class="live"}`)
		return v > 0
	})

	// Another tenant's live segment is stored while the stalled ones hang.
	resp, msg, err := put(n, tokB, "sb", time.Now().Add(-30*time.Second).UnixMilli(), fmp4(4096), 10*time.Second)
	if err != nil {
		t.Fatalf("other bridge's live upload: %v", err)
	}
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("other bridge's live upload: %d %s", resp.StatusCode, msg)
	}

	// Every stalled upload is answered: refused at once (503, over the
	// bridge's share) or ended by the body deadline (408).
	counts := map[int]int{}
	for range stalled {
		a := <-answers
		if a.err != nil {
			t.Fatalf("a stalled upload got no answer: %v", a.err)
		}
		counts[a.status]++
	}
	if counts[http.StatusRequestTimeout] == 0 || counts[http.StatusRequestTimeout]+counts[http.StatusServiceUnavailable] != stalled {
		t.Fatalf("stalled uploads answered %v, want only 408 and 503, some 408", counts)
	}
	if share := 2; counts[http.StatusRequestTimeout] > share {
		t.Fatalf("%d stalled uploads held a slot; the bridge's share is %d", counts[http.StatusRequestTimeout], share)
	}
	eventually(t, 10*time.Second, "the live slots to be free", func() bool {
		v, ok := gauge(t, n, `vigil_ingest_inflight{class="live"}`)
		return ok && v == 0
	})
}

// TestIdleConnectionsAreCappedAndExpire: 200 keep-alive connections from one
// source, each after one GET /healthz, against a cap of 50 per source. The
// node keeps at most 50 of them, answers health checks from another source
// and from the flooding one, and closes the idle rest after the idle timeout.
func TestIdleConnectionsAreCappedAndExpire(t *testing.T) {
	n := vigiltest.Start(t, vigilBin, vigiltest.Options{Args: []string{
		"--http-max-conns-per-ip", "50", "--http-idle-timeout", "5s",
	}})
	const flood = 200
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	healthz := "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
	for range flood {
		c, err := net.Dial("tcp", n.HTTPAddr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		// The node may close an old idle connection of this source to
		// make room for this one; this one is answered.
		if _, err := io.WriteString(c, healthz); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("healthz on a fresh connection: %v", err)
		}
		resp.Body.Close()
	}
	// The node closed all but the newest 50 (the older ones to make room).
	var closed sync.WaitGroup
	var mu sync.Mutex
	gone := 0
	for _, c := range conns {
		closed.Go(func() {
			// A connection the node closed has its EOF waiting already;
			// an open one times out here.
			_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
				mu.Lock()
				gone++
				mu.Unlock()
			}
		})
	}
	closed.Wait()
	if gone < flood-50 {
		t.Fatalf("node closed %d of %d idle connections from one source, want at least %d (cap 50)", gone, flood, flood-50)
	}
	if v, ok := gauge(t, n, "vigil_http_connections"); !ok || v > 50+1 {
		t.Fatalf("node holds %v connections (found %v), want at most 50 of the flood and this one", v, ok)
	}

	// Another source (127.0.0.2 is loopback too) is answered.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	other := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	resp, err := other.Get(n.Base + "/healthz")
	if err != nil {
		t.Fatalf("healthz from another source: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz from another source: %d", resp.StatusCode)
	}

	// Every flood connection is closed by the node: the older ones to make
	// room, the rest once idle for the idle timeout.
	var wg sync.WaitGroup
	open := 0
	for _, c := range conns {
		wg.Go(func() {
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, err := c.Read(make([]byte, 1))
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				mu.Lock()
				open++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if open > 0 {
		t.Fatalf("%d idle connections still open after 20 s (idle timeout 5 s)", open)
	}
	if v, ok := gauge(t, n, "vigil_http_connections"); !ok || v > 1 {
		t.Fatalf("node holds %v connections (found %v), want only this one", v, ok)
	}
}

// TestFrozenBackendsAnswer503: MinIO and then Redis are frozen with
// SIGSTOP. An upload is answered 503 with Retry-After within the
// configured deadline, /readyz names the component that hangs (and only
// it), and the node recovers after SIGCONT.
func TestFrozenBackendsAnswer503(t *testing.T) {
	minio := testutil.StartMinIO(t)
	bucket := minio.Bucket(t)
	rdb := testutil.StartRedis(t)
	env := append(minio.Env(bucket), "VIGIL_REDIS_ADDR="+rdb.Addr)
	n := vigiltest.Start(t, vigilBin, vigiltest.Options{Env: env, Args: []string{
		"--storage-timeout", "2s", "--index-timeout", "2s", "--readyz-timeout", "1s",
	}})
	tok := n.Provision("s1")
	start := time.Now().Add(-time.Minute).UnixMilli()
	next := func() int64 { start += 2000; return start }
	mustPut := func(t *testing.T, want int) {
		t.Helper()
		// Four times the 2-s deadlines: room for a loaded machine, not
		// for a client library's own retries.
		resp, msg, err := put(n, tok, "s1", next(), fmp4(8192), 8*time.Second)
		if err != nil {
			t.Fatalf("put: no answer: %v", err)
		}
		if resp.StatusCode != want {
			t.Fatalf("put: %d %s, want %d", resp.StatusCode, msg, want)
		}
		if want == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
			t.Fatalf("503 without Retry-After: %s", msg)
		}
	}
	readyz := func(t *testing.T) (int, map[string]string) {
		t.Helper()
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get(n.Base + "/readyz")
		if err != nil {
			t.Fatalf("readyz: no answer: %v", err)
		}
		defer resp.Body.Close()
		var checks map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&checks); err != nil {
			t.Fatalf("readyz body: %v", err)
		}
		return resp.StatusCode, checks
	}
	waitReady := func(t *testing.T) {
		t.Helper()
		eventually(t, 30*time.Second, "readyz 200", func() bool { s, _ := readyz(t); return s == http.StatusOK })
	}
	mustPut(t, http.StatusCreated)

	for _, frozen := range []struct {
		name, check string
		p           *testutil.Process
	}{{"minio", "storage", &minio.Process}, {"redis", "index", &rdb.Process}} {
		t.Run(frozen.name, func(t *testing.T) {
			frozen.p.Signal(syscall.SIGSTOP)
			thawed := false
			thaw := func() {
				if !thawed {
					frozen.p.Signal(syscall.SIGCONT)
					thawed = true
				}
			}
			defer thaw()

			mustPut(t, http.StatusServiceUnavailable)
			status, checks := readyz(t)
			if status != http.StatusServiceUnavailable {
				t.Fatalf("readyz with %s frozen: %d %v", frozen.name, status, checks)
			}
			for name, v := range checks {
				if (name == frozen.check) == (v == "ok") {
					t.Fatalf("readyz with %s frozen: %v, want only %s failing", frozen.name, checks, frozen.check)
				}
			}

			thaw()
			waitReady(t)
			mustPut(t, http.StatusCreated)
		})
	}
}
