package ingest

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/storage"
)

// TestBridgeShareLeavesSlotsForOthers: a bridge whose uploads hang holds at
// most its share of the live pool; its next upload is refused at once and
// another bridge's live upload is admitted.
func TestBridgeShareLeavesSlotsForOthers(t *testing.T) {
	starts := []int64{now.Add(-3 * time.Second).UnixMilli(), now.Add(-4 * time.Second).UnixMilli()}
	blocked := &blockingStore{block: map[string]bool{}, release: make(chan struct{})}
	for _, s := range starts {
		blocked.block[ref1.SegmentKey(s)] = true
	}
	e := newEnv(t, func(c *Config, s *storage.Backend, _ *Index) {
		c.LiveConcurrency = 4
		c.BridgeShare = 0.5
		blocked.Backend = *s
		*s = blocked
	})
	live := map[string]string{"class": classLive}
	res := make(chan reply, len(starts))
	for _, s := range starts {
		go func() { res <- e.do(t, put{start: strconv.FormatInt(s, 10), body: segment(t, 100)}) }()
	}
	waitFor(t, "b1 holding two slots", func() bool { return metricValue(t, e.prom, "vigil_ingest_inflight", live) == 2 })

	r := e.do(t, put{start: nowMS(-5 * time.Second), body: segment(t, 100)})
	assert.Equal(t, http.StatusServiceUnavailable, r.status, r.body)
	assert.Equal(t, "bridge_overloaded", r.code)
	assert.NotEmpty(t, r.header.Get("Retry-After"))

	r = e.do(t, put{path: "/v1/streams/s2/segments/" + nowMS(-time.Second), token: "b2-token", body: segment(t, 100)})
	assert.Equal(t, http.StatusCreated, r.status, r.body)

	close(blocked.release)
	for range starts {
		assert.Equal(t, http.StatusCreated, (<-res).status)
	}
	// The share is given back: b1 uploads again.
	r = e.do(t, put{start: nowMS(-5 * time.Second), body: segment(t, 100)})
	assert.Equal(t, http.StatusCreated, r.status, r.body)
}

// TestStalledBodyIs408AndFreesSlot: a client that sends part of its body
// and then nothing is answered 408 after the idle timeout; its slot is free
// again and nothing is stored.
func TestStalledBodyIs408AndFreesSlot(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *storage.Backend, _ *Index) {
		c.LiveConcurrency = 1
		c.BodyIdleTimeout = 200 * time.Millisecond
	})
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	full := segment(t, 4096)
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = fmt.Fprintf(c, "PUT /v1/streams/s1/segments/%s?duration_ms=1000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer b1-token\r\n"+
		"Content-Type: video/mp4\r\nContent-Length: %d\r\n\r\n", nowMS(-time.Second), len(full))
	require.NoError(t, err)
	_, err = c.Write(full[:1024])
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	r := readReply(t, resp)
	assert.Equal(t, http.StatusRequestTimeout, r.status, r.body)
	assert.Equal(t, "body_timeout", r.code)

	waitFor(t, "the slot to be free", func() bool {
		return metricValue(t, e.prom, "vigil_ingest_inflight", map[string]string{"class": classLive}) == 0
	})
	r = e.do(t, put{start: nowMS(-2 * time.Second), body: segment(t, 100)})
	assert.Equal(t, http.StatusCreated, r.status, r.body)
	assert.Len(t, objects(t, e.store), 1)
}

// TestTricklingBodyIs408: a client that keeps sending, but slower than the
// minimum rate, is ended by the whole-body deadline although it is never
// idle for the idle timeout.
func TestTricklingBodyIs408(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *storage.Backend, _ *Index) {
		c.BodyIdleTimeout = 300 * time.Millisecond
		c.BodyMinRate = 1000 // the ~560-byte body gets about 0.9 s in all
	})
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	full := segment(t, 500)
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = fmt.Fprintf(c, "PUT /v1/streams/s1/segments/%s?duration_ms=1000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer b1-token\r\n"+
		"Content-Type: video/mp4\r\nContent-Length: %d\r\n\r\n", nowMS(-time.Second), len(full))
	require.NoError(t, err)
	answered := make(chan reply, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			answered <- reply{}
			return
		}
		answered <- readReply(t, resp)
	}()
	// 10 bytes every 100 ms: 100 bytes/s, never idle for 300 ms.
	for rest := full; len(rest) > 0; rest = rest[min(10, len(rest)):] {
		select {
		case r := <-answered:
			assert.Equal(t, http.StatusRequestTimeout, r.status, r.body)
			assert.Equal(t, "body_timeout", r.code)
			assert.Empty(t, objects(t, e.store))
			return
		case <-time.After(100 * time.Millisecond):
		}
		if _, err := c.Write(rest[:min(10, len(rest))]); err != nil {
			break // the node closed the connection; its answer is read below
		}
	}
	r := <-answered
	assert.Equal(t, http.StatusRequestTimeout, r.status, r.body)
	assert.Equal(t, "body_timeout", r.code)
	assert.Empty(t, objects(t, e.store))
}
