package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// WithDeadline bounds every call to b by d, so that a store that stops
// answering (a frozen MinIO, a hung NFS mount) fails the call with
// ErrUnavailable instead of holding the caller for minutes.
//
// Calls that stream are bounded by progress, not by their total time: Put
// fails when the backend holds the turn for d without asking for more of
// the body or, once the body is read, without completing; time spent
// waiting for the caller's reader (a client still uploading) does not
// count. A Get's reader fails when one Read takes longer than d. Bodies the
// caller owns whole (*os.File, an AdoptableBody) are passed through untouched, so
// a backend can still copy them in the kernel; they get d plus one second
// per MiB.
func WithDeadline(b Backend, d time.Duration) Backend {
	if d <= 0 {
		return b
	}
	return &deadlined{b: b, d: d}
}

type deadlined struct {
	b Backend
	d time.Duration
}

var _ Backend = (*deadlined)(nil)

// errStalled is the cause of a context a watchdog cancelled.
var errStalled = errors.New("storage did not answer in time")

func (s *deadlined) timeout(err error, ctx context.Context) error {
	if err != nil && errors.Is(context.Cause(ctx), errStalled) {
		return fmt.Errorf("%w: no answer within %s: %w", ErrUnavailable, s.d, err)
	}
	return err
}

func (s *deadlined) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (ObjectInfo, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := newWatchdog(s.d, cancel)
	defer w.stop()
	switch r.(type) {
	case *os.File, AdoptableBody:
		w.extend(time.Duration(size>>20) * time.Second)
	default:
		r = &watchedReader{r: r, w: w}
	}
	info, err := s.b.Put(ctx, key, r, size, opts)
	return info, s.timeout(err, ctx)
}

func (s *deadlined) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, ObjectInfo, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := newWatchdog(s.d, cancel)
	rc, info, err := s.b.Get(ctx, key, offset, length)
	if err != nil {
		w.stop()
		cancel(nil)
		return nil, info, s.timeout(err, ctx)
	}
	// The reader's consumer (a viewer) sets the pace: only a Read that
	// hangs in the backend counts.
	w.pause()
	return &deadlinedReader{rc: rc, w: w, ctx: ctx, cancel: cancel, s: s}, info, nil
}

func (s *deadlined) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := newWatchdog(s.d, cancel)
	defer w.stop()
	info, err := s.b.Stat(ctx, key)
	return info, s.timeout(err, ctx)
}

func (s *deadlined) List(ctx context.Context, prefix, after string, limit int) ([]ObjectInfo, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := newWatchdog(s.d, cancel)
	defer w.stop()
	objs, err := s.b.List(ctx, prefix, after, limit)
	return objs, s.timeout(err, ctx)
}

// Delete gets d per batch of 1,000 keys (one S3 multi-object delete each).
func (s *deadlined) Delete(ctx context.Context, keys []string) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := newWatchdog(s.d, cancel)
	defer w.stop()
	w.extend(time.Duration(len(keys)/1000) * s.d)
	return s.timeout(s.b.Delete(ctx, keys), ctx)
}

func (s *deadlined) Ping(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := newWatchdog(s.d, cancel)
	defer w.stop()
	return s.timeout(s.b.Ping(ctx), ctx)
}

// watchdog cancels a context when it runs for d without being paused or
// reset. It starts running.
type watchdog struct {
	mu      sync.Mutex
	d       time.Duration
	t       *time.Timer
	stopped bool
}

func newWatchdog(d time.Duration, cancel context.CancelCauseFunc) *watchdog {
	return &watchdog{d: d, t: time.AfterFunc(d, func() { cancel(errStalled) })}
}

// extend gives the running watchdog extra time once.
func (w *watchdog) extend(extra time.Duration) {
	if extra <= 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped && w.t.Stop() {
		w.t.Reset(w.d + extra)
	}
}

// pause stops the clock while the caller, not the backend, holds the turn.
func (w *watchdog) pause() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Stop()
}

// resume restarts the clock with a full d.
func (w *watchdog) resume() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Reset(w.d)
	}
}

func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.t.Stop()
}

// watchedReader pauses the watchdog while the backend waits for the
// caller's body.
type watchedReader struct {
	r io.Reader
	w *watchdog
}

func (r *watchedReader) Read(p []byte) (int, error) {
	r.w.pause()
	defer r.w.resume()
	return r.r.Read(p)
}

// deadlinedReader runs the watchdog only inside Read.
type deadlinedReader struct {
	rc     io.ReadCloser
	w      *watchdog
	ctx    context.Context
	cancel context.CancelCauseFunc
	s      *deadlined
}

func (r *deadlinedReader) Read(p []byte) (int, error) {
	r.w.resume()
	n, err := r.rc.Read(p)
	r.w.pause()
	if err != nil && err != io.EOF {
		err = r.s.timeout(err, r.ctx)
	}
	return n, err
}

func (r *deadlinedReader) Close() error {
	r.w.stop()
	err := r.rc.Close()
	r.cancel(nil)
	return err
}
