package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/storage"
	"github.com/vigilcloud/vigil/storage/storagetest"
)

func newFS(t *testing.T) *Backend {
	t.Helper()
	b, err := New(t.TempDir())
	require.NoError(t, err)
	return b
}

func TestBackend(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend { return newFS(t) })
}

func TestDotSegmentsRejected(t *testing.T) {
	b := newFS(t)
	for _, key := range []string{".tmp/x", "a/.meta", ".hidden", `a\b`} {
		_, err := b.Put(context.Background(), key, strings.NewReader("x"), 1, storage.PutOptions{})
		require.Error(t, err, key)
	}
	objs, err := b.List(context.Background(), ".tmp/", "", 10)
	require.NoError(t, err)
	require.Empty(t, objs)
}

// Deleting the last object of a directory prunes the emptied directories
// up to root, and nothing but .tmp is left.
func TestDeletePrunesDirectories(t *testing.T) {
	b := newFS(t)
	ctx := context.Background()
	for _, k := range []string{"a/b/c/1", "a/b/c/2", "a/x"} {
		_, err := b.Put(ctx, k, strings.NewReader("x"), 1, storage.PutOptions{})
		require.NoError(t, err)
	}
	require.NoError(t, b.Delete(ctx, []string{"a/b/c/1"}))
	require.DirExists(t, filepath.Join(b.Root(), "a/b/c"))
	require.NoError(t, b.Delete(ctx, []string{"a/b/c/2"}))
	require.NoDirExists(t, filepath.Join(b.Root(), "a/b"))
	require.DirExists(t, filepath.Join(b.Root(), "a"))
	require.NoError(t, b.Delete(ctx, []string{"a/x"}))
	ents, err := os.ReadDir(b.Root())
	require.NoError(t, err)
	require.Len(t, ents, 1)
	require.Equal(t, ".tmp", ents[0].Name())
}

// Puts racing deletes that prune the same directories all land.
func TestPutRacingPrune(t *testing.T) {
	b := newFS(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8*40)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				key := fmt.Sprintf("d/e/f/%d-%d", w, i)
				if _, err := b.Put(ctx, key, strings.NewReader("x"), 1, storage.PutOptions{IfAbsent: true}); err != nil {
					errs <- err
					continue
				}
				if _, err := b.Stat(ctx, key); err != nil {
					errs <- err
				}
				if err := b.Delete(ctx, []string{key}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// List walks only below the directory part of the prefix.
func TestListWalksOnlyPrefixDirectory(t *testing.T) {
	b := newFS(t)
	ctx := context.Background()
	var keys []string
	for i := range 30 {
		keys = append(keys, fmt.Sprintf("acc/cam%d/s/seg/2024/01/01/%02d/%d", i%3, i%24, i))
	}
	for _, k := range keys {
		_, err := b.Put(ctx, k, strings.NewReader("x"), 1, storage.PutOptions{})
		require.NoError(t, err)
	}
	l := lister{ctx: ctx, prefix: "acc/cam1/s/seg/2024/01/01/04/", limit: 100}
	require.NoError(t, l.walk(filepath.Join(b.Root(), "acc/cam1/s/seg/2024/01/01/04"), "acc/cam1/s/seg/2024/01/01/04/"))
	require.Equal(t, 1, l.dirs)
	require.Len(t, l.out, 2)

	// Through the public method, the same prefix finds the same objects.
	objs, err := b.List(ctx, "acc/cam1/s/seg/2024/01/01/04/", "", 100)
	require.NoError(t, err)
	require.Len(t, objs, 2)
	require.Equal(t, []string{"acc/cam1/s/seg/2024/01/01/04/28", "acc/cam1/s/seg/2024/01/01/04/4"}, []string{objs[0].Key, objs[1].Key})

	// A prefix with a partial last segment walks its parent only once.
	l = lister{ctx: ctx, prefix: "acc/cam1/s/seg/2024/01/01/0", limit: 100}
	require.NoError(t, l.walk(filepath.Join(b.Root(), "acc/cam1/s/seg/2024/01/01"), "acc/cam1/s/seg/2024/01/01/"))
	// The parent plus the hours 01, 04 and 07 of cam1 that match "0".
	require.Equal(t, 4, l.dirs)
	require.Len(t, l.out, 5)
}

// A key cannot be both an object and a directory of other objects on
// disk; the store's key layout never needs that.
func TestObjectAndPrefixConflict(t *testing.T) {
	b := newFS(t)
	ctx := context.Background()
	_, err := b.Put(ctx, "c/a", strings.NewReader("x"), 1, storage.PutOptions{})
	require.NoError(t, err)
	_, err = b.Put(ctx, "c/a/b", strings.NewReader("x"), 1, storage.PutOptions{})
	require.Error(t, err)
	_, err = b.Put(ctx, "d/a/b", strings.NewReader("x"), 1, storage.PutOptions{})
	require.NoError(t, err)
	_, err = b.Put(ctx, "d/a", strings.NewReader("x"), 1, storage.PutOptions{IfAbsent: true})
	require.Error(t, err)
	require.False(t, errors.Is(err, storage.ErrExists))
}

func TestNewRemovesLeftovers(t *testing.T) {
	root := t.TempDir()
	b, err := New(root)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(root, ".tmp", "put-123"), []byte("partial"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(root, ".tmp", "dir"), 0o755))
	_, err = b.Put(context.Background(), "k/v", strings.NewReader("kept"), 4, storage.PutOptions{})
	require.NoError(t, err)

	b, err = New(root)
	require.NoError(t, err)
	ents, err := os.ReadDir(filepath.Join(root, ".tmp"))
	require.NoError(t, err)
	require.Empty(t, ents)
	rc, _, err := b.Get(context.Background(), "k/v", 0, -1)
	require.NoError(t, err)
	defer rc.Close()
	data, _ := io.ReadAll(rc)
	require.Equal(t, "kept", string(data))
}

// The helper process writes part of an object and blocks, to be SIGKILLed.
func TestHelperProcessPut(t *testing.T) {
	root := os.Getenv("VIGIL_FS_HELPER_ROOT")
	if root == "" {
		t.Skip("helper for TestCrashMidPut")
	}
	b, err := New(root)
	if err != nil {
		os.Exit(2)
	}
	pr, pw := io.Pipe()
	go func() {
		pw.Write(bytes.Repeat([]byte("v"), 300_000))
		os.WriteFile(filepath.Join(root, "..", "ready"), nil, 0o644)
		select {} // stall until killed
	}()
	b.Put(context.Background(), "crash/seg", pr, 1<<20, storage.PutOptions{IfAbsent: true})
	os.Exit(3)
}

func TestCrashMidPut(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcessPut$")
	cmd.Env = append(os.Environ(), "VIGIL_FS_HELPER_ROOT="+root)
	require.NoError(t, cmd.Start())
	ready := filepath.Join(dir, "ready")
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if cmd.ProcessState != nil {
			t.Fatal("helper exited early")
		}
		syscall.Nanosleep(&syscall.Timespec{Nsec: 10e6}, nil)
	}
	// The partial write sits in .tmp.
	ents, err := os.ReadDir(filepath.Join(root, ".tmp"))
	require.NoError(t, err)
	require.NotEmpty(t, ents)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()

	b, err := New(root)
	require.NoError(t, err)
	_, err = b.Stat(context.Background(), "crash/seg")
	require.ErrorIs(t, err, iofs.ErrNotExist)
	objs, err := b.List(context.Background(), "", "", 10)
	require.NoError(t, err)
	require.Empty(t, objs)
	ents, err = os.ReadDir(filepath.Join(root, ".tmp"))
	require.NoError(t, err)
	require.Empty(t, ents)
	_, err = b.Put(context.Background(), "crash/seg", strings.NewReader("ok"), 2, storage.PutOptions{IfAbsent: true})
	require.NoError(t, err)
}

func TestDiskErrorsAreUnavailable(t *testing.T) {
	for _, e := range []syscall.Errno{syscall.ENOSPC, syscall.EIO, syscall.EROFS} {
		err := wrapDisk(&os.PathError{Op: "write", Path: "x", Err: e})
		require.ErrorIs(t, err, storage.ErrUnavailable)
		require.ErrorIs(t, err, e)
	}
	err := wrapDisk(&os.PathError{Op: "open", Path: "x", Err: syscall.ENOENT})
	require.False(t, errors.Is(err, storage.ErrUnavailable))
	require.ErrorIs(t, err, iofs.ErrNotExist)
}

func TestPingFailsWhenRootIsGone(t *testing.T) {
	b := newFS(t)
	require.NoError(t, b.Ping(context.Background()))
	require.NoError(t, os.RemoveAll(b.Root()))
	require.Error(t, b.Ping(context.Background()))
}

func TestCorruptObjectIsAnError(t *testing.T) {
	b := newFS(t)
	require.NoError(t, os.MkdirAll(filepath.Join(b.Root(), "raw"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(b.Root(), "raw", "file"), bytes.Repeat([]byte("z"), 5000), 0o644))
	_, err := b.Stat(context.Background(), "raw/file")
	require.Error(t, err)
	require.False(t, errors.Is(err, iofs.ErrNotExist))
}

// TestPutFromFile: a body that is an *os.File (copied in the kernel where
// possible) stores exactly size bytes from the file's offset, with
// metadata; a file shorter than size stores nothing.
func TestPutFromFile(t *testing.T) {
	t.Parallel()
	b := newFS(t)
	ctx := context.Background()
	data := bytes.Repeat([]byte("0123456789abcdef"), 40000) // 640 KB
	path := filepath.Join(t.TempDir(), "src")
	require.NoError(t, os.WriteFile(path, data, 0o644))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.Seek(16, io.SeekStart)
	require.NoError(t, err)
	_, err = b.Put(ctx, "a/file", f, int64(len(data)-32), storage.PutOptions{IfAbsent: true, Metadata: map[string]string{"k": "v"}})
	require.NoError(t, err)
	rc, info, err := b.Get(ctx, "a/file", 0, -1)
	require.NoError(t, err)
	got, err := io.ReadAll(rc)
	rc.Close()
	require.NoError(t, err)
	require.Equal(t, data[16:len(data)-16], got)
	require.Equal(t, "v", info.Metadata["k"])

	_, err = f.Seek(0, io.SeekStart)
	require.NoError(t, err)
	_, err = b.Put(ctx, "a/short", f, int64(len(data)+1), storage.PutOptions{})
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	_, _, err = b.Get(ctx, "a/short", 0, -1)
	require.ErrorIs(t, err, iofs.ErrNotExist)
}

// spoolFile writes body after storage.SpoolHeadroom free bytes, plus tail.
func spoolFile(t *testing.T, dir string, body, tail []byte) *os.File {
	t.Helper()
	f, err := os.CreateTemp(dir, "spool-*")
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	_, err = f.WriteAt(append(append([]byte{}, body...), tail...), storage.SpoolHeadroom)
	require.NoError(t, err)
	return f
}

func readObject(t *testing.T, b *Backend, key string) ([]byte, storage.ObjectInfo) {
	t.Helper()
	rc, info, err := b.Get(context.Background(), key, 0, -1)
	require.NoError(t, err)
	defer rc.Close()
	got, err := io.ReadAll(rc)
	require.NoError(t, err)
	return got, info
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	sa, err := os.Stat(a)
	require.NoError(t, err)
	sb, err := os.Stat(b)
	require.NoError(t, err)
	return os.SameFile(sa, sb)
}

// TestPutAdoptsSpooledFile: a storage.Spooled body becomes the object
// without a copy when it can, and is copied (or refused) when it cannot.
func TestPutAdoptsSpooledFile(t *testing.T) {
	t.Parallel()
	b := newFS(t)
	ctx := context.Background()
	spoolDir := t.TempDir()
	body := bytes.Repeat([]byte("segment "), 50000)
	meta := storage.PutOptions{IfAbsent: true, ContentType: "video/mp4", Metadata: map[string]string{"sha256": "abc"}}

	f := spoolFile(t, spoolDir, body, nil)
	_, err := b.Put(ctx, "a/1", storage.NewSpooled(f, int64(len(body))), int64(len(body)), meta)
	require.NoError(t, err)
	got, info := readObject(t, b, "a/1")
	require.Equal(t, body, got)
	require.Equal(t, "abc", info.Metadata["sha256"])
	require.Equal(t, "video/mp4", info.ContentType)
	require.True(t, sameFile(t, f.Name(), b.path("a/1")), "the spooled file itself is the object")
	left, err := os.ReadDir(b.tmp)
	require.NoError(t, err)
	require.Empty(t, left, "no temp copy")

	// The same file again, under another key: it is an object already
	// (two names), so it is copied and the first object is untouched.
	_, err = b.Put(ctx, "a/2", storage.NewSpooled(f, int64(len(body))), int64(len(body)), storage.PutOptions{IfAbsent: true, Metadata: map[string]string{"sha256": "other"}})
	require.NoError(t, err)
	require.False(t, sameFile(t, b.path("a/1"), b.path("a/2")))
	_, info = readObject(t, b, "a/1")
	require.Equal(t, "abc", info.Metadata["sha256"])
	got, info = readObject(t, b, "a/2")
	require.Equal(t, body, got)
	require.Equal(t, "other", info.Metadata["sha256"])

	// Another file at a taken key: ErrExists, the object stays as it was.
	other := spoolFile(t, spoolDir, []byte("different"), nil)
	_, err = b.Put(ctx, "a/1", storage.NewSpooled(other, 9), 9, storage.PutOptions{IfAbsent: true, Metadata: map[string]string{"sha256": "x"}})
	require.ErrorIs(t, err, storage.ErrExists)
	got, info = readObject(t, b, "a/1")
	require.Equal(t, body, got)
	require.Equal(t, "abc", info.Metadata["sha256"])

	// Bytes after the body (a torn fragment) never become part of an
	// object: the body alone is copied.
	torn := spoolFile(t, spoolDir, body[:1000], []byte("torn tail"))
	_, err = b.Put(ctx, "a/3", storage.NewSpooled(torn, 1000), 1000, meta)
	require.NoError(t, err)
	got, _ = readObject(t, b, "a/3")
	require.Equal(t, body[:1000], got)
	require.False(t, sameFile(t, torn.Name(), b.path("a/3")))

	// A cancelled Put publishes nothing.
	cf := spoolFile(t, spoolDir, body[:10], nil)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = b.Put(cctx, "a/4", storage.NewSpooled(cf, 10), 10, meta)
	require.ErrorIs(t, err, context.Canceled)
	_, err = b.Stat(ctx, "a/4")
	require.ErrorIs(t, err, iofs.ErrNotExist)
}

// TestPutSpooledAcrossFileSystems: a spooled file on another file system
// cannot be linked, so it is copied.
func TestPutSpooledAcrossFileSystems(t *testing.T) {
	t.Parallel()
	b := newFS(t)
	shm, err := os.MkdirTemp("/dev/shm", "vigil-fs-test-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	var a, c syscall.Stat_t
	require.NoError(t, syscall.Stat(shm, &a))
	require.NoError(t, syscall.Stat(b.root, &c))
	if a.Dev == c.Dev {
		t.Skip("/dev/shm is on the same file system as the test's temp dir")
	}
	body := []byte("across devices")
	f := spoolFile(t, shm, body, nil)
	_, err = b.Put(context.Background(), "x/1", storage.NewSpooled(f, int64(len(body))), int64(len(body)), storage.PutOptions{IfAbsent: true})
	require.NoError(t, err)
	got, _ := readObject(t, b, "x/1")
	require.Equal(t, body, got)
}
