package localcluster

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A directory with a previous cluster's parts is refused before anything
// starts: their state names ports this run will not use.
func TestRefusesPreviousCluster(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "redis"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), Config{Dir: dir, VigilBin: "/nonexistent/vigil"})
	if err == nil || !strings.Contains(err.Error(), "previous local cluster") {
		t.Fatalf("got %v, want a refusal", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "minio")); !os.IsNotExist(err) {
		t.Fatalf("something started: %v", err)
	}
}
