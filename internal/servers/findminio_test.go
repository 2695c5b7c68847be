package servers

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Benchmarks find the MinIO scripts/test.sh builds into the tools cache
// when none is on PATH, and otherwise say how to get one.
func TestFindMinIOInToolsCache(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("PATH", t.TempDir())
	t.Setenv("VIGIL_TOOLS_CACHE", cache)
	if _, err := FindMinIO(""); err == nil || !strings.Contains(err.Error(), "scripts/test.sh") || !strings.Contains(err.Error(), "--minio") {
		t.Fatalf("no minio anywhere: err %v, want one naming scripts/test.sh and --minio", err)
	}
	bin := filepath.Join(cache, "minio-v0.0.0-20260212201848-7aac2a2c5b7c", "minio")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := FindMinIO(""); err != nil || got != bin {
		t.Fatalf("FindMinIO = %q, %v; want %q", got, err, bin)
	}
	t.Setenv("VIGIL_TOOLS_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", filepath.Dir(cache))
	if err := os.Rename(cache, filepath.Join(filepath.Dir(cache), "vigil-tools")); err != nil {
		t.Fatal(err)
	}
	if got, err := FindMinIO(""); err != nil || !strings.HasSuffix(got, "/vigil-tools/minio-v0.0.0-20260212201848-7aac2a2c5b7c/minio") {
		t.Fatalf("under XDG_CACHE_HOME: FindMinIO = %q, %v", got, err)
	}
	if _, err := FindMinIO(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Fatal("an explicit missing binary was accepted")
	}
}
