package storage_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/storage"
	"github.com/vigilcloud/vigil/storage/fs"
	"github.com/vigilcloud/vigil/storage/storagetest"
)

// frozen is a backend that never answers: every call blocks until its
// context ends, as a SIGSTOPped MinIO does. Put first reads the whole body.
type frozen struct{ storage.Backend }

func (frozen) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) (storage.ObjectInfo, error) {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return storage.ObjectInfo{}, err
	}
	<-ctx.Done()
	return storage.ObjectInfo{}, ctx.Err()
}

func (frozen) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	<-ctx.Done()
	return storage.ObjectInfo{}, ctx.Err()
}

func (frozen) List(ctx context.Context, prefix, after string, limit int) ([]storage.ObjectInfo, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (frozen) Ping(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

func TestWithDeadlineFailsFrozenCallsAsUnavailable(t *testing.T) {
	b := storage.WithDeadline(frozen{}, 50*time.Millisecond)
	ctx := context.Background()
	_, err := b.Stat(ctx, "a/b")
	require.ErrorIs(t, err, storage.ErrUnavailable)
	_, err = b.List(ctx, "a/", "", 10)
	require.ErrorIs(t, err, storage.ErrUnavailable)
	require.ErrorIs(t, b.Ping(ctx), storage.ErrUnavailable)
	_, err = b.Put(ctx, "a/b", bytes.NewReader([]byte("xyz")), 3, storage.PutOptions{})
	require.ErrorIs(t, err, storage.ErrUnavailable)

	// The caller's own cancellation is not the store's fault.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	err = b.Ping(cctx)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, storage.ErrUnavailable)
}

// slowReader hands out one byte per Read after a pause longer than the
// deadline: a client that uploads slowly but steadily.
type slowReader struct {
	b     []byte
	pause time.Duration
}

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	time.Sleep(r.pause)
	p[0] = r.b[0]
	r.b = r.b[1:]
	return 1, nil
}

func TestWithDeadlineDoesNotCountTheCallersReads(t *testing.T) {
	fb, err := fs.New(t.TempDir())
	require.NoError(t, err)
	b := storage.WithDeadline(fb, 50*time.Millisecond)
	ctx := context.Background()
	body := []byte("abcd")
	_, err = b.Put(ctx, "a/b", &slowReader{b: append([]byte(nil), body...), pause: 80 * time.Millisecond}, int64(len(body)), storage.PutOptions{IfAbsent: true})
	require.NoError(t, err)

	rc, _, err := b.Get(ctx, "a/b", 0, -1)
	require.NoError(t, err)
	time.Sleep(80 * time.Millisecond) // a slow viewer: not the store's fault
	got, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	require.Equal(t, body, got)

	_, err = b.Stat(ctx, "a/missing")
	require.True(t, errors.Is(err, storage.ErrUnavailable) == false && err != nil)
}

// TestWithDeadlineConformance: the wrapper keeps every Backend guarantee.
func TestWithDeadlineConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		b, err := fs.New(t.TempDir())
		require.NoError(t, err)
		return storage.WithDeadline(b, 10*time.Second)
	})
}
