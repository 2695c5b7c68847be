// Package storage defines the object store vigil keeps video in, and the key
// layout that makes listing and deleting by account, camera, stream and time
// cheap. Implementations live in storage/fs (the embedded default) and
// storage/s3 (minio-go, the production choice).
package storage

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrExists is returned by Put with IfAbsent when the key already holds an
// object. It is how concurrent uploads of one segment store exactly one.
var ErrExists = errors.New("storage: object already exists")

// ErrUnavailable is wrapped by backend errors that say the store cannot be
// reached or cannot take writes right now (connection refused, timeouts, a
// failing or full disk), as opposed to a bad request. Callers answer 503
// and retry later on it.
var ErrUnavailable = errors.New("storage: unavailable")

// PutOptions control a write.
type PutOptions struct {
	// ContentType is stored with the object and returned by Stat and Get.
	ContentType string
	// Metadata holds small string pairs kept with the object (lower-case
	// keys of [a-z0-9-]). Rebuilding the index reads them back.
	Metadata map[string]string
	// IfAbsent makes Put fail with ErrExists when the key exists, atomically.
	IfAbsent bool
}

// ObjectInfo describes a stored object. List fills Key, Size and ModTime
// only; Stat and Get fill everything.
type ObjectInfo struct {
	Key         string
	Size        int64
	ModTime     time.Time
	ContentType string
	Metadata    map[string]string
}

// Backend is an object store. Every method is safe for concurrent use.
//
// A missing key is reported as an error that matches fs.ErrNotExist.
type Backend interface {
	// Put streams exactly size bytes from r to key. The object becomes
	// visible only once complete: a short body, a reader error or a
	// cancelled context leaves nothing behind. Memory stays bounded.
	Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (ObjectInfo, error)
	// Get reads length bytes from offset (length < 0 reads to the end).
	Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, ObjectInfo, error)
	// Stat describes key.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List returns up to limit objects under prefix whose keys sort after
	// the key after, in lexical order. Fewer than limit means the end.
	List(ctx context.Context, prefix, after string, limit int) ([]ObjectInfo, error)
	// Delete removes keys in batches (S3 multi-object delete takes up to
	// 1,000 a request); a missing key is not an error.
	Delete(ctx context.Context, keys []string) error
	// Ping checks that the store answers.
	Ping(ctx context.Context) error
}

// Walk calls fn for every object under prefix, page by page.
func Walk(ctx context.Context, b Backend, prefix string, fn func(ObjectInfo) error) error {
	const page = 1000
	after := ""
	for {
		objs, err := b.List(ctx, prefix, after, page)
		if err != nil {
			return err
		}
		for _, o := range objs {
			if err := fn(o); err != nil {
				return err
			}
		}
		if len(objs) < page {
			return nil
		}
		after = objs[len(objs)-1].Key
	}
}
