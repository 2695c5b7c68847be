package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/raft"
)

// cleanShutdownFile records the applied index at the last clean shutdown.
const cleanShutdownFile = "clean-shutdown.json"

type cleanShutdown struct {
	AppliedIndex uint64 `json:"applied_index"`
}

// checkIntegrity refuses raft state that would otherwise start silently
// smaller than it was. raft itself skips a snapshot whose meta.json does not
// parse and falls back to older snapshots; with the log compacted behind the
// newest snapshot that would lose committed entries without a word.
func checkIntegrity(base string, logs raft.LogStore, snaps *raft.FileSnapshotStore) error {
	snapDir := filepath.Join(base, "snapshots")
	entries, err := os.ReadDir(snapDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cluster: read %s: %w", snapDir, err)
	}
	for _, e := range entries {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".tmp") {
			continue // .tmp: a snapshot that was never completed
		}
		p := filepath.Join(snapDir, e.Name(), "meta.json")
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("cluster: snapshot %s is damaged: %w", e.Name(), err)
		}
		var m raft.SnapshotMeta
		if err := json.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("cluster: snapshot %s is damaged: %s: %w", e.Name(), p, err)
		}
	}

	list, err := snaps.List()
	if err != nil {
		return fmt.Errorf("cluster: list snapshots: %w", err)
	}
	var snapIndex uint64
	if len(list) > 0 {
		newest := list[0]
		snapIndex = newest.Index
		// Open verifies the CRC of the whole state file.
		_, rc, err := snaps.Open(newest.ID)
		if err != nil {
			return fmt.Errorf("cluster: snapshot %s is damaged (truncated or corrupt): %w", newest.ID, err)
		}
		_, _ = io.Copy(io.Discard, rc)
		_ = rc.Close()
	}

	first, err := logs.FirstIndex()
	if err != nil {
		return fmt.Errorf("cluster: read WAL first index: %w", err)
	}
	last, err := logs.LastIndex()
	if err != nil {
		return fmt.Errorf("cluster: read WAL last index: %w", err)
	}
	if last > 0 && first > snapIndex+1 {
		return fmt.Errorf("cluster: WAL starts at index %d but the newest snapshot ends at %d: entries %d-%d are missing",
			first, snapIndex, snapIndex+1, first-1)
	}

	b, err := os.ReadFile(filepath.Join(base, cleanShutdownFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("cluster: read %s: %w", cleanShutdownFile, err)
	}
	var cs cleanShutdown
	if err := json.Unmarshal(b, &cs); err != nil {
		return fmt.Errorf("cluster: %s is damaged: %w", cleanShutdownFile, err)
	}
	end := max(last, snapIndex)
	if end < cs.AppliedIndex {
		return fmt.Errorf("cluster: raft state ends at index %d but index %d was applied before the last clean shutdown: the WAL or snapshots were truncated or removed",
			end, cs.AppliedIndex)
	}
	return nil
}

// writeCleanShutdown records idx durably (temp file, fsync, rename).
func writeCleanShutdown(base string, idx uint64) error {
	b, _ := json.Marshal(cleanShutdown{AppliedIndex: idx})
	p := filepath.Join(base, cleanShutdownFile)
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("cluster: write %s: %w", tmp, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("cluster: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("cluster: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cluster: close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("cluster: rename %s: %w", tmp, err)
	}
	return nil
}
