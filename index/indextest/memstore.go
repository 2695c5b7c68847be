package indextest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vigilcloud/vigil/storage"
)

// MemStore is an in-memory storage.Backend for unit tests. It can be made
// to fail, to test how the index reports an unavailable store.
type MemStore struct {
	mu   sync.Mutex
	objs map[string]memObject
	fail error
}

type memObject struct {
	data []byte
	info storage.ObjectInfo
}

var _ storage.Backend = (*MemStore)(nil)

// NewMemStore returns an empty store.
func NewMemStore() *MemStore { return &MemStore{objs: make(map[string]memObject)} }

// SetFailure makes every call fail with err (nil heals the store).
func (m *MemStore) SetFailure(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail = err
}

func (m *MemStore) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) (storage.ObjectInfo, error) {
	b, err := io.ReadAll(io.LimitReader(r, size+1))
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	if int64(len(b)) != size {
		return storage.ObjectInfo{}, fmt.Errorf("memstore: put %s: body is %d bytes, want %d", key, len(b), size)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return storage.ObjectInfo{}, m.fail
	}
	if _, ok := m.objs[key]; ok && opts.IfAbsent {
		return storage.ObjectInfo{}, storage.ErrExists
	}
	info := storage.ObjectInfo{Key: key, Size: size, ModTime: time.Now(), ContentType: opts.ContentType, Metadata: maps.Clone(opts.Metadata)}
	m.objs[key] = memObject{data: b, info: info}
	return info, nil
}

func (m *MemStore) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, storage.ObjectInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, storage.ObjectInfo{}, m.fail
	}
	o, ok := m.objs[key]
	if !ok {
		return nil, storage.ObjectInfo{}, fmt.Errorf("memstore: get %s: %w", key, fs.ErrNotExist)
	}
	b := o.data[min(offset, int64(len(o.data))):]
	if length >= 0 && length < int64(len(b)) {
		b = b[:length]
	}
	return io.NopCloser(bytes.NewReader(b)), o.info, nil
}

func (m *MemStore) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return storage.ObjectInfo{}, m.fail
	}
	o, ok := m.objs[key]
	if !ok {
		return storage.ObjectInfo{}, fmt.Errorf("memstore: stat %s: %w", key, fs.ErrNotExist)
	}
	return o.info, nil
}

func (m *MemStore) List(ctx context.Context, prefix, after string, limit int) ([]storage.ObjectInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	var keys []string
	for k := range m.objs {
		if strings.HasPrefix(k, prefix) && k > after {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	if len(keys) > limit {
		keys = keys[:limit]
	}
	out := make([]storage.ObjectInfo, 0, len(keys))
	for _, k := range keys {
		i := m.objs[k].info
		out = append(out, storage.ObjectInfo{Key: k, Size: i.Size, ModTime: i.ModTime})
	}
	return out, nil
}

func (m *MemStore) Delete(ctx context.Context, keys []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	for _, k := range keys {
		delete(m.objs, k)
	}
	return nil
}

func (m *MemStore) Ping(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fail
}
