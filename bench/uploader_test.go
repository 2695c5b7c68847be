package bench

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/media"
)

func TestUploaderRetriesUntilFinal(t *testing.T) {
	var calls atomic.Int32
	var gotBody []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		gotBody, _ = io.ReadAll(r.Body)
		if r.Header.Get("Authorization") != "Bearer tok" || r.Header.Get("X-Vigil-Backlog") != "1" ||
			r.URL.Query().Get("duration_ms") != "2000" || r.ContentLength != 5 {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		switch n {
		case 1:
			w.WriteHeader(http.StatusServiceUnavailable)
		case 2:
			w.WriteHeader(http.StatusBadGateway)
		default:
			w.WriteHeader(http.StatusCreated)
		}
	}))
	defer srv.Close()
	up := &Uploader{BaseURL: srv.URL, Token: "tok", MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	res, err := up.Upload(context.Background(), Segment{Stream: "s", Start: time.UnixMilli(1000), Duration: 2 * time.Second,
		Body: []byte("hello"), ContentType: "video/mp4", Backlog: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != http.StatusCreated || res.Attempts != 3 || !bytes.Equal(gotBody, []byte("hello")) {
		t.Fatalf("result %+v, body %q; want 201 after 3 attempts", res, gotBody)
	}
}

func TestUploaderStopsOnFinalAnswers(t *testing.T) {
	for _, status := range []int{http.StatusConflict, http.StatusGone, http.StatusNotFound, http.StatusForbidden, http.StatusOK} {
		var calls atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			w.WriteHeader(status)
		}))
		up := &Uploader{BaseURL: srv.URL, Token: "t", MinBackoff: time.Millisecond}
		res, err := up.Upload(context.Background(), Segment{Stream: "s", Duration: time.Second, Body: []byte("x")})
		srv.Close()
		if err != nil || res.Status != status || calls.Load() != 1 {
			t.Errorf("status %d: result %+v err %v calls %d; want one attempt", status, res, err, calls.Load())
		}
	}
}

func TestUploaderGivesUpOnNetworkErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens any more
	up := &Uploader{BaseURL: url, Token: "t", MaxAttempts: 3, MinBackoff: time.Millisecond}
	res, err := up.Upload(context.Background(), Segment{Stream: "s", Duration: time.Second, Body: []byte("x")})
	if err == nil || res.Attempts != 3 || res.Status != 0 {
		t.Fatalf("result %+v err %v; want an error after 3 attempts", res, err)
	}
}

func TestSyntheticFMP4IsWellFormed(t *testing.T) {
	for _, size := range []int{1, 32, 256 << 10, 4 << 20} {
		b := SyntheticFMP4(size)
		if size >= 32 && len(b) != size {
			t.Fatalf("size %d: got %d bytes", size, len(b))
		}
		r, err := media.NewValidator(bytes.NewReader(b), "video/mp4")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			t.Fatalf("size %d: validator rejects the synthetic payload: %v", size, err)
		}
	}
}

func TestTallyPercentile(t *testing.T) {
	var tl Tally
	for i := 100; i >= 1; i-- {
		tl.add(Result{Status: 201, Latency: time.Duration(i) * time.Millisecond}, nil, 10)
	}
	tl.add(Result{}, context.Canceled, 10)
	if p := tl.Percentile(50); p != 50*time.Millisecond {
		t.Errorf("p50 %v", p)
	}
	if p := tl.Percentile(99); p != 99*time.Millisecond {
		t.Errorf("p99 %v", p)
	}
	if tl.Stored() != 100 || tl.Failures != 1 || tl.Bytes != 1000 {
		t.Errorf("tally %+v", tl)
	}
}

// TestUploaderHonoursRetryAfter: after a 503 the next attempt waits at
// least what Retry-After asks, even when its own backoff is shorter.
func TestUploaderHonoursRetryAfter(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	var waits []time.Duration
	up := &Uploader{BaseURL: srv.URL, Token: "tok", MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond,
		after: func(d time.Duration) <-chan time.Time {
			waits = append(waits, d)
			c := make(chan time.Time, 1)
			c <- time.Time{}
			return c
		}}
	res, err := up.Upload(context.Background(), Segment{Stream: "s", Start: time.UnixMilli(1000), Duration: time.Second,
		Body: []byte("x"), ContentType: "video/mp4", Backlog: true})
	if err != nil || res.Status != http.StatusCreated || res.Attempts != 3 {
		t.Fatalf("result %+v, %v; want 201 after 3 attempts", res, err)
	}
	if len(waits) != 2 || waits[0] < 3*time.Second || waits[1] < 3*time.Second {
		t.Fatalf("waits %v; want two of at least the 3 s Retry-After", waits)
	}
}
