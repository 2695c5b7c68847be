// Package lease makes sure one worker at a time works on a key (a stream's
// sweep, a purge job, an RTSP publisher), also across nodes when the lease
// is shared: in Redis or in the meter's replicated state. A node chooses
// one implementation and hands it to every user.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"
)

// Lease hands out keys to one holder at a time. It is declared here, not
// by its users, because retention and the RTSP recorder share one.
type Lease interface {
	// TryAcquire takes key for ttl. ok is false (and err nil) when someone
	// else holds it.
	TryAcquire(ctx context.Context, key string, ttl time.Duration) (h Held, ok bool, err error)
}

// Held is an acquired lease.
type Held interface {
	// Extend renews the lease for another ttl; it fails when the lease
	// was lost (expired and taken by someone else).
	Extend(ctx context.Context, ttl time.Duration) error
	// Release gives the lease up if still held.
	Release(ctx context.Context) error
}

// Keep renews held every ttl/3 until stop is called; stop returns once no
// renewal is in flight, so a Release after it is the last word. The
// returned context ends when a renewal fails (the lease may be someone
// else's by then), so that the work under it stops; its cause says why.
func Keep(ctx context.Context, held Held, ttl time.Duration) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := held.Extend(ctx, ttl); err != nil {
					cancel(err)
					return
				}
			}
		}
	}()
	return ctx, func() { cancel(nil); <-exited }
}

// newToken names one holding, so that a stale holder cannot extend or
// release a lease someone else took since.
func newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
