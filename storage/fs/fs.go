// Package fs is the local-disk storage.Backend, vigil's embedded default.
//
// Each object is one file at root/{key}. The file starts with a fixed
// 4 KiB header holding the content type and metadata (JSON, zero padded),
// followed by the object's bytes. Keeping metadata inside the data file
// rather than in a sidecar means one atomic step (link or rename) publishes
// data and metadata together: a losing IfAbsent writer never touches the
// winner's metadata, a crash can never leave data without its metadata or
// an orphan sidecar, and List learns an object's size from stat alone
// (file size minus the header). 4 KiB is twice S3's 2 KiB metadata limit.
//
// Writes stream into root/.tmp, are fsynced, then linked (IfAbsent) or
// renamed into place, and the parent directory is fsynced. Leftovers in
// .tmp from a crash are removed by New. A storage.AdoptableBody (Spooled) is not
// copied: its file already has the header's room in front of the body, so
// the header is written there and that file is synced and linked in its
// place (falling back to a copy when it is on another file system). Key segments may not begin with
// "." so that backend bookkeeping (.tmp) never collides with a key. Unlike
// S3, a key cannot also be the prefix of another key ("a" and "a/b"): one
// is a file, the other needs a directory of that name; such a Put fails.
package fs

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"

	"github.com/vigilcloud/vigil/internal/fsutil"
	"github.com/vigilcloud/vigil/storage"
)

var _ storage.Backend = (*Backend)(nil)

const (
	tmpDirName = ".tmp"
	// headerSize is storage.SpoolHeadroom, so that a spooled file can
	// become an object where it lies.
	headerSize = storage.SpoolHeadroom
	magic      = "VIGILFS1"
	// copyBuf bounds the memory of one Put.
	copyBuf = 256 << 10
)

var metaKeyPattern = regexp.MustCompile(`^[a-z0-9-]+$`)

// Backend stores objects under a root directory. Safe for concurrent use.
type Backend struct {
	root string
	tmp  string
}

// New opens (creating if needed) a store rooted at root and removes any
// partial writes left in root/.tmp by a crash.
func New(root string) (*Backend, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("fs: root %s: %w", root, err)
	}
	b := &Backend{root: abs, tmp: filepath.Join(abs, tmpDirName)}
	if err := os.MkdirAll(b.tmp, 0o755); err != nil {
		return nil, fmt.Errorf("fs: create %s: %w", b.tmp, wrapDisk(err))
	}
	ents, err := os.ReadDir(b.tmp)
	if err != nil {
		return nil, fmt.Errorf("fs: read %s: %w", b.tmp, wrapDisk(err))
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(b.tmp, e.Name())); err != nil {
			return nil, fmt.Errorf("fs: clean %s: %w", e.Name(), wrapDisk(err))
		}
	}
	return b, nil
}

// Root returns the directory the store lives in.
func (b *Backend) Root() string { return b.root }

// header is what the first headerSize bytes of every object file hold.
type header struct {
	ContentType string            `json:"ct,omitempty"`
	Metadata    map[string]string `json:"md,omitempty"`
}

func encodeHeader(opts storage.PutOptions) ([]byte, error) {
	for k := range opts.Metadata {
		if !metaKeyPattern.MatchString(k) {
			return nil, fmt.Errorf("invalid metadata key %q (want [a-z0-9-]+)", k)
		}
	}
	js, err := json.Marshal(header{ContentType: contentType(opts), Metadata: opts.Metadata})
	if err != nil {
		return nil, err
	}
	if len(magic)+4+len(js) > headerSize {
		return nil, fmt.Errorf("content type and metadata take %d bytes, more than %d", len(js), headerSize-len(magic)-4)
	}
	buf := make([]byte, headerSize)
	copy(buf, magic)
	binary.BigEndian.PutUint32(buf[len(magic):], uint32(len(js)))
	copy(buf[len(magic)+4:], js)
	return buf, nil
}

func readHeader(f *os.File) (header, error) {
	buf := make([]byte, headerSize)
	if _, err := io.ReadFull(f, buf); err != nil {
		return header{}, fmt.Errorf("read header: %w", err)
	}
	if !bytes.Equal(buf[:len(magic)], []byte(magic)) {
		return header{}, errors.New("not a vigil object (bad header)")
	}
	n := binary.BigEndian.Uint32(buf[len(magic):])
	if int(n) > headerSize-len(magic)-4 {
		return header{}, errors.New("corrupt header length")
	}
	var h header
	if err := json.Unmarshal(buf[len(magic)+4:len(magic)+4+int(n)], &h); err != nil {
		return header{}, fmt.Errorf("corrupt header: %w", err)
	}
	return h, nil
}

// checkKey rejects keys that could escape root or collide with bookkeeping.
func checkKey(key string) error {
	if key == "" {
		return errors.New("empty key")
	}
	if strings.IndexByte(key, 0) >= 0 {
		return errors.New("key contains NUL")
	}
	if strings.Contains(key, `\`) {
		return errors.New("key contains a backslash")
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" {
			return errors.New("key has an empty segment (leading, trailing or double slash)")
		}
		if seg[0] == '.' {
			return errors.New("key segment begins with '.'")
		}
	}
	return nil
}

func (b *Backend) path(key string) string {
	return filepath.Join(b.root, filepath.FromSlash(key))
}

// Put implements storage.Backend.
func (b *Backend) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) (storage.ObjectInfo, error) {
	info, err := b.put(ctx, key, r, size, opts)
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("fs: put %s: %w", key, err)
	}
	return info, nil
}

func (b *Backend) put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) (storage.ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return storage.ObjectInfo{}, err
	}
	if size < 0 {
		return storage.ObjectInfo{}, fmt.Errorf("negative size %d", size)
	}
	hdr, err := encodeHeader(opts)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.ObjectInfo{}, err
	}
	if sp, ok := r.(storage.AdoptableBody); ok && sp.Size() == size {
		info, adopted, err := b.adopt(ctx, key, sp, hdr, opts)
		if adopted || err != nil {
			return info, err
		}
	}
	f, err := os.CreateTemp(b.tmp, "put-*")
	if err != nil {
		return storage.ObjectInfo{}, wrapDisk(err)
	}
	tmp := f.Name()
	// Whatever happens, the temp name goes away: after a link the data
	// lives on under the final name, after a rename this is a no-op.
	defer os.Remove(tmp)
	st, err := writeTemp(ctx, f, hdr, r, size)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = wrapDisk(cerr)
	}
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	// A cancelled context must leave nothing, so check before publishing.
	if err := ctx.Err(); err != nil {
		return storage.ObjectInfo{}, err
	}
	final := b.path(key)
	if err := b.publish(tmp, final, opts.IfAbsent); err != nil {
		return storage.ObjectInfo{}, err
	}
	return putInfo(key, size, st, opts), nil
}

// putInfo describes the object a Put just published from file st.
func putInfo(key string, size int64, st os.FileInfo, opts storage.PutOptions) storage.ObjectInfo {
	return storage.ObjectInfo{
		Key:         key,
		Size:        size,
		ModTime:     st.ModTime(),
		ContentType: contentType(opts),
		Metadata:    maps.Clone(opts.Metadata),
	}
}

// adopt makes sp's file the object: the header goes into its headroom, the
// file is synced and linked (or renamed) to key. adopted is false, with no
// error, when the file cannot be linked from where it is (another file
// system); the caller copies it then.
func (b *Backend) adopt(ctx context.Context, key string, sp storage.AdoptableBody, hdr []byte, opts storage.PutOptions) (info storage.ObjectInfo, adopted bool, err error) {
	f := sp.SpoolFile()
	st, err := f.Stat()
	if err != nil {
		return storage.ObjectInfo{}, false, wrapDisk(err)
	}
	if st.Size() != headerSize+sp.Size() {
		// Bytes after the body would become part of the object.
		return storage.ObjectInfo{}, false, nil
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); !ok || sys.Nlink != 1 {
		// It has another name already, perhaps as an object (a retry
		// after a Put whose caller failed later): never write into it.
		return storage.ObjectInfo{}, false, nil
	}
	if _, err := f.WriteAt(hdr, 0); err != nil {
		return storage.ObjectInfo{}, false, wrapDisk(err)
	}
	if err := f.Sync(); err != nil {
		return storage.ObjectInfo{}, false, wrapDisk(err)
	}
	if err := ctx.Err(); err != nil {
		return storage.ObjectInfo{}, false, err
	}
	if err := b.publish(f.Name(), b.path(key), opts.IfAbsent); err != nil {
		if errors.Is(err, syscall.EXDEV) {
			return storage.ObjectInfo{}, false, nil
		}
		return storage.ObjectInfo{}, true, err
	}
	return putInfo(key, sp.Size(), st, opts), true, nil
}

// writeTemp writes the header and exactly size bytes of r to f and syncs it.
func writeTemp(ctx context.Context, f *os.File, hdr []byte, r io.Reader, size int64) (os.FileInfo, error) {
	if _, err := f.Write(hdr); err != nil {
		return nil, wrapDisk(err)
	}
	var n int64
	var err error
	if src, ok := r.(*os.File); ok {
		// A file (the recorder's spool): os.File.ReadFrom copies it in the
		// kernel (copy_file_range) where it can. Not cancellable midway,
		// but its size is bounded and ctx is checked before publishing.
		n, err = f.ReadFrom(io.LimitReader(src, size))
	} else {
		n, err = io.CopyBuffer(onlyWriter{f}, io.LimitReader(ctxReader{ctx, r}, size), make([]byte, copyBuf))
	}
	if err != nil {
		return nil, wrapDisk(err)
	}
	if n < size {
		return nil, fmt.Errorf("body has %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
	}
	if err := f.Sync(); err != nil {
		return nil, wrapDisk(err)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, wrapDisk(err)
	}
	return st, nil
}

// publish makes tmp visible as final. A concurrent Delete may prune the
// directory between MkdirAll and the link, so ENOENT is retried.
func (b *Backend) publish(tmp, final string, ifAbsent bool) error {
	dir := filepath.Dir(final)
	var err error
	for range 10 {
		if err = b.mkdirAll(dir); err != nil {
			if errors.Is(err, iofs.ErrNotExist) {
				continue // a parent was pruned under us
			}
			return err
		}
		if ifAbsent {
			err = os.Link(tmp, final)
		} else {
			err = os.Rename(tmp, final)
		}
		if err == nil {
			break
		}
		if ifAbsent && errors.Is(err, iofs.ErrExist) {
			if st, serr := os.Lstat(final); serr == nil && st.IsDir() {
				return fmt.Errorf("key is a prefix of other keys: %w", err)
			}
			return storage.ErrExists
		}
		if errors.Is(err, syscall.EISDIR) || errors.Is(err, iofs.ErrExist) {
			return fmt.Errorf("key is a prefix of other keys: %w", err)
		}
		if !errors.Is(err, iofs.ErrNotExist) {
			return wrapDisk(err)
		}
	}
	if err != nil {
		return wrapDisk(err)
	}
	return syncDir(dir)
}

// mkdirAll creates dir and its missing parents below root, syncing each
// parent so that the new entries survive a crash.
func (b *Backend) mkdirAll(dir string) error {
	if st, err := os.Stat(dir); err == nil {
		if !st.IsDir() {
			return fmt.Errorf("%s is an object, not a prefix", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir && len(parent) >= len(b.root) {
		if err := b.mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, iofs.ErrExist) {
			return nil
		}
		if errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("a parent of %s is an object: %w", dir, err)
		}
		return wrapDisk(err)
	}
	return syncDir(parent)
}

func syncDir(dir string) error { return wrapDisk(fsutil.SyncDir(dir)) }

// open opens key and reads its header.
func (b *Backend) open(key string) (*os.File, storage.ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return nil, storage.ObjectInfo{}, err
	}
	f, err := os.Open(b.path(key))
	if err != nil {
		if errors.Is(err, syscall.ENOTDIR) {
			err = &iofs.PathError{Op: "open", Path: key, Err: iofs.ErrNotExist}
		}
		return nil, storage.ObjectInfo{}, wrapDisk(err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, storage.ObjectInfo{}, wrapDisk(err)
	}
	if st.IsDir() {
		f.Close()
		return nil, storage.ObjectInfo{}, &iofs.PathError{Op: "open", Path: key, Err: iofs.ErrNotExist}
	}
	h, err := readHeader(f)
	if err != nil {
		f.Close()
		return nil, storage.ObjectInfo{}, err
	}
	return f, storage.ObjectInfo{
		Key:         key,
		Size:        st.Size() - headerSize,
		ModTime:     st.ModTime(),
		ContentType: h.ContentType,
		Metadata:    h.Metadata,
	}, nil
}

// Get implements storage.Backend. An offset past the end is an error; an
// offset at the end yields an empty body.
func (b *Backend) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, storage.ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, storage.ObjectInfo{}, fmt.Errorf("fs: get %s: %w", key, err)
	}
	f, info, err := b.open(key)
	if err != nil {
		return nil, storage.ObjectInfo{}, fmt.Errorf("fs: get %s: %w", key, err)
	}
	if offset < 0 || offset > info.Size {
		f.Close()
		return nil, storage.ObjectInfo{}, fmt.Errorf("fs: get %s: offset %d outside object of %d bytes", key, offset, info.Size)
	}
	n := info.Size - offset
	if length >= 0 && length < n {
		n = length
	}
	return &section{SectionReader: io.NewSectionReader(f, headerSize+offset, n), f: f}, info, nil
}

type section struct {
	*io.SectionReader
	f *os.File
}

func (s *section) Close() error { return s.f.Close() }

// Stat implements storage.Backend.
func (b *Backend) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("fs: stat %s: %w", key, err)
	}
	f, info, err := b.open(key)
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("fs: stat %s: %w", key, err)
	}
	f.Close()
	return info, nil
}

// List implements storage.Backend. It walks only the directory named by
// the prefix up to its last slash, in key order, pruning subtrees that sort
// entirely before after.
func (b *Backend) List(ctx context.Context, prefix, after string, limit int) ([]storage.ObjectInfo, error) {
	if limit <= 0 {
		return nil, nil
	}
	if strings.IndexByte(prefix, 0) >= 0 || strings.Contains(prefix, `\`) {
		return nil, fmt.Errorf("fs: list %s: invalid prefix", prefix)
	}
	dirKey := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		dirKey = prefix[:i+1]
		// A directory part that is no valid key prefix holds nothing.
		if checkKey(dirKey+"x") != nil {
			return nil, nil
		}
	}
	l := lister{ctx: ctx, prefix: prefix, after: after, limit: limit}
	err := l.walk(filepath.Join(b.root, filepath.FromSlash(dirKey)), dirKey)
	if err != nil && err != errEnough {
		return nil, fmt.Errorf("fs: list %s: %w", prefix, err)
	}
	return l.out, nil
}

var errEnough = errors.New("enough")

type lister struct {
	ctx           context.Context
	prefix, after string
	limit         int
	out           []storage.ObjectInfo
	dirs          int // directories read, for tests
}

type entry struct {
	name string // name + "/" for directories, so siblings sort in key order
	dir  bool
}

func (l *lister) walk(dir, dirKey string) error {
	if err := l.ctx.Err(); err != nil {
		return err
	}
	l.dirs++
	des, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, iofs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil // pruned by a concurrent Delete, or no such prefix
		}
		return wrapDisk(err)
	}
	ents := make([]entry, 0, len(des))
	for _, de := range des {
		name := de.Name()
		if name[0] == '.' {
			continue // .tmp and other bookkeeping
		}
		if de.IsDir() {
			ents = append(ents, entry{name + "/", true})
		} else if de.Type().IsRegular() {
			ents = append(ents, entry{name, false})
		}
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].name < ents[j].name })
	for _, e := range ents {
		k := dirKey + e.name
		if e.dir {
			// Skip subtrees outside the prefix or wholly at or before after.
			if !strings.HasPrefix(k, l.prefix) && !strings.HasPrefix(l.prefix, k) {
				continue
			}
			if k <= l.after && !strings.HasPrefix(l.after, k) {
				continue
			}
			if err := l.walk(filepath.Join(dir, strings.TrimSuffix(e.name, "/")), k); err != nil {
				return err
			}
			continue
		}
		if !strings.HasPrefix(k, l.prefix) || k <= l.after {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, e.name))
		if err != nil {
			if errors.Is(err, iofs.ErrNotExist) {
				continue // deleted meanwhile
			}
			return wrapDisk(err)
		}
		if fi.Size() < headerSize {
			continue // not an object of ours
		}
		l.out = append(l.out, storage.ObjectInfo{Key: k, Size: fi.Size() - headerSize, ModTime: fi.ModTime()})
		if len(l.out) >= l.limit {
			return errEnough
		}
	}
	return nil
}

// Delete implements storage.Backend. It removes each key and prunes the
// parent directories it leaves empty, up to root.
func (b *Backend) Delete(ctx context.Context, keys []string) error {
	for _, key := range keys {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("fs: delete: %w", err)
		}
		if err := checkKey(key); err != nil {
			return fmt.Errorf("fs: delete %s: %w", key, err)
		}
		p := b.path(key)
		st, err := os.Lstat(p)
		if err != nil {
			if errors.Is(err, iofs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				continue
			}
			return fmt.Errorf("fs: delete %s: %w", key, wrapDisk(err))
		}
		if st.IsDir() {
			continue // a prefix, not an object
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, iofs.ErrNotExist) {
			return fmt.Errorf("fs: delete %s: %w", key, wrapDisk(err))
		}
		b.prune(filepath.Dir(p))
	}
	return nil
}

// prune removes empty directories from dir up to (not including) root.
// Removing a non-empty directory fails, which is where it stops.
func (b *Backend) prune(dir string) {
	for dir != b.root && strings.HasPrefix(dir, b.root+string(filepath.Separator)) {
		if os.Remove(dir) != nil {
			return
		}
		dir = filepath.Dir(dir)
	}
}

// Ping implements storage.Backend: it checks that root takes a write.
func (b *Backend) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fs: ping: %w", err)
	}
	f, err := os.CreateTemp(b.tmp, "ping-*")
	if err != nil {
		return fmt.Errorf("fs: ping: %w", wrapDisk(err))
	}
	defer os.Remove(f.Name())
	_, err = f.Write([]byte("ping"))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fs: ping: %w", wrapDisk(err))
	}
	return nil
}

// wrapDisk marks errors that mean the disk, not the request, is at fault.
func wrapDisk(err error) error {
	if err == nil {
		return nil
	}
	for _, e := range []syscall.Errno{syscall.EIO, syscall.ENOSPC, syscall.EROFS, syscall.EDQUOT, syscall.EACCES, syscall.EPERM} {
		if errors.Is(err, e) {
			return fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
		}
	}
	return err
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// onlyWriter hides os.File's ReadFrom so CopyBuffer uses our bounded buffer.
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }

// contentType defaults like S3 does, so both backends report the same.
func contentType(opts storage.PutOptions) string {
	if opts.ContentType == "" {
		return "application/octet-stream"
	}
	return opts.ContentType
}
