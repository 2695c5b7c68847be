package index

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"slices"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/vigilcloud/vigil/storage"
)

// Stored is what storage holds for one stream: the hour manifests and the
// segment objects that no manifest lists yet.
type Stored struct {
	// Manifests maps an hour start (Unix ms) to that hour's manifest.
	Manifests map[int64][]Segment
	// Unindexed are segment objects found in no manifest, by start. The
	// index holds them as open entries until the next compaction.
	Unindexed []Segment
}

// LastManifestHour is the latest hour with a manifest, or -1.
func (s *Stored) LastManifestHour() int64 {
	last := int64(-1)
	for h := range s.Manifests {
		last = max(last, h)
	}
	return last
}

// All returns every segment, sorted by start.
func (s *Stored) All() []Segment {
	var all []Segment
	for _, h := range slices.Sorted(maps.Keys(s.Manifests)) {
		all = append(all, s.Manifests[h]...)
	}
	all = append(all, s.Unindexed...)
	SortSegments(all)
	return all
}

// UnindexedByHour groups the unindexed segments by hour start.
func (s *Stored) UnindexedByHour() map[int64][]Segment {
	out := make(map[int64][]Segment)
	for _, seg := range s.Unindexed {
		h := hourStart(seg.Start)
		out[h] = append(out[h], seg)
	}
	return out
}

// ScanStorage reads everything storage holds for ref: every manifest under
// ref.ManifestPrefix() and every segment object under ref.SegmentPrefix().
// Objects listed in a manifest are taken from it; the others are Stat'ed for
// their metadata. An object whose metadata cannot describe a segment is
// logged and skipped; a corrupt manifest fails the scan (rewriting it from
// the objects is an operator decision).
func ScanStorage(ctx context.Context, store storage.Backend, ref storage.StreamRef, log *slog.Logger) (*Stored, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st := &Stored{Manifests: make(map[int64][]Segment)}
	// The manifests are read eight at a time while the listing goes on: a
	// year is 8,760 of them, and each read waits on storage.
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	err := storage.Walk(gctx, store, ref.ManifestPrefix(), func(o storage.ObjectInfo) error {
		_, hour, err := storage.ParseManifestKey(o.Key)
		if err != nil {
			log.Warn("index: rebuild: skipping foreign object", "key", o.Key)
			return nil
		}
		g.Go(func() error {
			segs, err := ReadManifestIfAny(gctx, store, ref, hour)
			if err != nil {
				return err
			}
			mu.Lock()
			st.Manifests[hour] = segs
			mu.Unlock()
			return nil
		})
		return nil
	})
	if err := errors.Join(g.Wait(), err); err != nil {
		return nil, fmt.Errorf("index: rebuild %s: %w", ref.StreamPrefix(), err)
	}
	indexed := make(map[int64]bool)
	for _, segs := range st.Manifests {
		for _, s := range segs {
			indexed[s.Start] = true
		}
	}
	err = storage.Walk(ctx, store, ref.SegmentPrefix(), func(o storage.ObjectInfo) error {
		_, start, err := storage.ParseSegmentKey(o.Key)
		if err != nil {
			log.Warn("index: rebuild: skipping foreign object", "key", o.Key)
			return nil
		}
		if indexed[start] {
			return nil
		}
		info, err := store.Stat(ctx, o.Key)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted since the listing
		}
		if err != nil {
			return fmt.Errorf("stat %s: %w", o.Key, err)
		}
		seg, err := SegmentFromObject(info)
		if err != nil {
			log.Warn("index: rebuild: skipping segment object", "key", o.Key, "err", err)
			return nil
		}
		st.Unindexed = append(st.Unindexed, seg)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index: rebuild %s: %w", ref.StreamPrefix(), err)
	}
	SortSegments(st.Unindexed)
	return st, nil
}
