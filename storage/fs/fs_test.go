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
