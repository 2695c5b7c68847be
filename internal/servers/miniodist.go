package servers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// ErasureMinIO is one MinIO server erasure-coding across several drive
// directories (with 4 drives: 2 data and 2 parity shards per object, so
// reads survive 2 lost drives and writes 1).
type ErasureMinIO struct {
	*MinIO
	// Drives are the drive directories, drive1 … driveN under dir.
	Drives []string
}

// StartErasureMinIO starts MinIO (FindMinIO(bin)) on a free loopback
// port over drives directories under dir (`minio server dir/drive{1...N}`;
// MinIO needs at least 4 for erasure coding).
func StartErasureMinIO(ctx context.Context, bin, dir string, drives int) (*ErasureMinIO, error) {
	if drives < 4 {
		return nil, fmt.Errorf("erasure-coded minio: needs at least 4 drives, not %d", drives)
	}
	e := &ErasureMinIO{}
	for i := 1; i <= drives; i++ {
		d := filepath.Join(dir, fmt.Sprintf("drive%d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		e.Drives = append(e.Drives, d)
	}
	m, err := startMinIO(ctx, bin, dir, filepath.Join(dir, fmt.Sprintf("drive{1...%d}", drives)))
	if err != nil {
		return nil, err
	}
	e.MinIO = m
	return e, nil
}

// RemoveDrive takes drive i (0-based) away, as if the disk died: its
// directory is renamed and a file takes its place, so that MinIO cannot
// recreate it as a fresh drive. It returns where the data went.
func (e *ErasureMinIO) RemoveDrive(i int) (string, error) {
	gone := e.Drives[i] + ".removed"
	if err := os.Rename(e.Drives[i], gone); err != nil {
		return "", err
	}
	return gone, os.WriteFile(e.Drives[i], []byte("drive removed by a test\n"), 0o444)
}
