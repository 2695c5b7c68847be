// Package bench holds vigil's load generators and benchmarks: a simulated
// Bridge (live segments, an outage, the backlog drain) and the ingest
// benchmark that compares vigil against direct writes in the same run.
package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// Segment is one upload.
type Segment struct {
	Stream      string
	Start       time.Time
	Duration    time.Duration
	Body        []byte
	ContentType string
	Width       int
	Height      int
	Backlog     bool
}

// Uploader PUTs segments to a vigil node the way a Bridge does: it retries
// with exponential backoff and jitter on 503 (honouring Retry-After), other
// 5xx and network errors, and stops on any final answer.
type Uploader struct {
	BaseURL string // http://host:port
	Token   string
	Client  *http.Client
	// MaxAttempts bounds the tries of one segment; 0 retries until ctx ends.
	MaxAttempts int
	MinBackoff  time.Duration
	MaxBackoff  time.Duration
	Log         *slog.Logger

	after func(time.Duration) <-chan time.Time // the wait between attempts (tests); nil: time.After
}

// Result is what happened to one segment.
type Result struct {
	Status   int // final HTTP status; 0 when it never got one
	Attempts int
	Latency  time.Duration // of the final attempt
}

// Final reports whether status is an answer a Bridge must not retry.
func Final(status int) bool {
	return status != 0 && status != http.StatusServiceUnavailable && status < 500 && status != http.StatusTooManyRequests
}

// Upload sends seg until it gets a final answer, attempts run out, or ctx
// ends. It returns an error only when no final answer came.
func (u *Uploader) Upload(ctx context.Context, seg Segment) (Result, error) {
	backoff := u.MinBackoff
	if backoff <= 0 {
		backoff = 100 * time.Millisecond
	}
	maxBackoff := u.MaxBackoff
	if maxBackoff <= 0 {
		maxBackoff = 5 * time.Second
	}
	after := u.after
	if after == nil {
		after = time.After
	}
	var res Result
	for {
		res.Attempts++
		began := time.Now()
		status, retryAfter, err := u.put(ctx, seg)
		res.Latency = time.Since(began)
		res.Status = status
		if err == nil && Final(status) {
			return res, nil
		}
		if u.MaxAttempts > 0 && res.Attempts >= u.MaxAttempts {
			if err == nil {
				err = fmt.Errorf("status %d", status)
			}
			return res, fmt.Errorf("bridge: %s/%d: gave up after %d attempts: %w", seg.Stream, seg.Start.UnixMilli(), res.Attempts, err)
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		if retryAfter > wait {
			wait = retryAfter
		}
		if u.Log != nil {
			u.Log.Debug("bridge: retrying", "stream", seg.Stream, "start", seg.Start.UnixMilli(), "status", status, "err", err, "wait", wait)
		}
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("bridge: %s/%d: %w", seg.Stream, seg.Start.UnixMilli(), ctx.Err())
		case <-after(wait):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

func (u *Uploader) put(ctx context.Context, seg Segment) (status int, retryAfter time.Duration, err error) {
	url := fmt.Sprintf("%s/v1/streams/%s/segments/%d?duration_ms=%d", u.BaseURL, seg.Stream, seg.Start.UnixMilli(), seg.Duration.Milliseconds())
	if seg.Width > 0 && seg.Height > 0 {
		url += fmt.Sprintf("&width=%d&height=%d", seg.Width, seg.Height)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(seg.Body))
	if err != nil {
		return 0, 0, err
	}
	req.ContentLength = int64(len(seg.Body))
	req.Header.Set("Content-Type", seg.ContentType)
	req.Header.Set("Authorization", "Bearer "+u.Token)
	if seg.Backlog {
		req.Header.Set("X-Vigil-Backlog", "1")
	}
	client := u.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		retryAfter = time.Duration(s) * time.Second
	}
	return resp.StatusCode, retryAfter, nil
}
