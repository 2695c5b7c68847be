package index

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"slices"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/vigilcloud/vigil/storage"
)

// A stream summary is one object beside the hour manifests,
// <stream>/summary.zst, holding a digest of each manifest: its coverage
// spans, its latest segment and a hash of its starts. Loading a stream then
// reads the summary and lists the manifests instead of reading them all (a
// year is 8,760 reads).
//
// The summary is never trusted on its own: each digest carries the size and
// modification time the manifest had when it was listed, and a manifest
// listed with another size or time (rewritten, say by a crash between a
// manifest and the summary, or by retention), or absent from the summary, is
// read again. A digest whose manifest is gone is dropped, so deleted video
// never comes back from it.

// SummaryVersion is the summary format WriteSummary writes.
const SummaryVersion = 1

// MaxSummarySize bounds a summary, compressed and decompressed: some ten
// years of hours.
const MaxSummarySize = 64 << 20

// ErrCorruptSummary marks a summary that cannot be decoded. A load treats
// it as missing.
var ErrCorruptSummary = errors.New("index: corrupt summary")

// HourDigest is what a summary keeps of one hour manifest.
type HourDigest struct {
	Hour int64 `json:"hour"`
	// Size and MTime (Unix ns) are the manifest object's as listed.
	Size  int64 `json:"size"`
	MTime int64 `json:"mtime"`
	// Starts hashes the manifest's segment starts (StartsHash).
	Starts string  `json:"starts"`
	Spans  []Span  `json:"spans"`
	Last   Segment `json:"last"`
}

type summaryDoc struct {
	Version int          `json:"v"`
	Tol     int64        `json:"tol"` // the gap tolerance the spans were merged with
	Hours   []HourDigest `json:"hours"`
}

// SummaryKey is the key of ref's summary: outside idx/ and seg/, whose
// listings hold only manifests and segments.
func SummaryKey(ref storage.StreamRef) string { return ref.StreamPrefix() + "summary.zst" }

// StartsHash hashes a set of segment starts (in any order).
func StartsHash(starts []int64) string {
	sorted := slices.Sorted(slices.Values(starts))
	h := sha256.New()
	var b [8]byte
	for _, s := range sorted {
		binary.BigEndian.PutUint64(b[:], uint64(s))
		h.Write(b[:])
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// DigestOf returns the digest of an hour manifest listed as info.
func DigestOf(hour int64, info storage.ObjectInfo, segs []Segment, tol int64) HourDigest {
	starts := make([]int64, len(segs))
	for i, s := range segs {
		starts[i] = s.Start
	}
	last, _ := LatestOf(segs)
	return HourDigest{Hour: hour, Size: info.Size, MTime: info.ModTime.UnixNano(), Starts: StartsHash(starts),
		Spans: SpansOf(segs, tol), Last: last}
}

// EncodeSummary encodes digests merged with tol.
func EncodeSummary(tol int64, digests map[int64]HourDigest) ([]byte, error) {
	doc := summaryDoc{Version: SummaryVersion, Tol: tol, Hours: make([]HourDigest, 0, len(digests))}
	for _, h := range slices.Sorted(maps.Keys(digests)) {
		doc.Hours = append(doc.Hours, digests[h])
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("index: encode summary: %w", err)
	}
	if len(js) > MaxSummarySize {
		return nil, fmt.Errorf("index: encode summary: %d bytes exceeds %d", len(js), MaxSummarySize)
	}
	return zstdEncoder().EncodeAll(js, nil), nil
}

// DecodeSummary decodes a summary. Any defect is an error matching
// ErrCorruptSummary.
func DecodeSummary(b []byte) (tol int64, digests map[int64]HourDigest, err error) {
	if len(b) == 0 || len(b) > MaxSummarySize {
		return 0, nil, fmt.Errorf("%w: %d bytes", ErrCorruptSummary, len(b))
	}
	js, err := zstdDecoder().DecodeAll(b, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: zstd: %v", ErrCorruptSummary, err)
	}
	if len(js) > MaxSummarySize {
		return 0, nil, fmt.Errorf("%w: decompressed %d bytes", ErrCorruptSummary, len(js))
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var doc summaryDoc
	if err := dec.Decode(&doc); err != nil {
		return 0, nil, fmt.Errorf("%w: json: %v", ErrCorruptSummary, err)
	}
	if dec.More() {
		return 0, nil, fmt.Errorf("%w: trailing data", ErrCorruptSummary)
	}
	if doc.Version != SummaryVersion || doc.Tol < 0 {
		return 0, nil, fmt.Errorf("%w: version %d, tolerance %d", ErrCorruptSummary, doc.Version, doc.Tol)
	}
	digests = make(map[int64]HourDigest, len(doc.Hours))
	for _, d := range doc.Hours {
		if err := checkDigest(d); err != nil {
			return 0, nil, fmt.Errorf("%w: hour %d: %v", ErrCorruptSummary, d.Hour, err)
		}
		if _, dup := digests[d.Hour]; dup {
			return 0, nil, fmt.Errorf("%w: hour %d twice", ErrCorruptSummary, d.Hour)
		}
		digests[d.Hour] = d
	}
	return doc.Tol, digests, nil
}

// checkDigest rejects a digest whose spans could not come from its hour.
func checkDigest(d HourDigest) error {
	if d.Hour < 0 || d.Hour%hourMS != 0 {
		return errors.New("not an hour start")
	}
	if len(d.Spans) == 0 {
		return nil // an empty manifest
	}
	if err := ValidateSegment(d.Last); err != nil {
		return err
	}
	for i, s := range d.Spans {
		if s.End <= s.Start || s.Start < d.Hour || s.Start >= d.Hour+hourMS || i > 0 && s.Start <= d.Spans[i-1].End {
			return fmt.Errorf("span %d-%d out of order or outside the hour", s.Start, s.End)
		}
	}
	return nil
}

// WriteSummary writes (overwrites) ref's summary.
func WriteSummary(ctx context.Context, store storage.Backend, ref storage.StreamRef, tol int64, digests map[int64]HourDigest) error {
	b, err := EncodeSummary(tol, digests)
	if err != nil {
		return err
	}
	if _, err := store.Put(ctx, SummaryKey(ref), bytes.NewReader(b), int64(len(b)), storage.PutOptions{ContentType: manifestContentType}); err != nil {
		return fmt.Errorf("index: write summary %s: %w", ref.StreamPrefix(), err)
	}
	return nil
}

// ReadSummary reads ref's summary; a missing or corrupt one (logged) or one
// merged with another tolerance is empty.
func ReadSummary(ctx context.Context, store storage.Backend, ref storage.StreamRef, tol int64, log *slog.Logger) (map[int64]HourDigest, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rc, _, err := store.Get(ctx, SummaryKey(ref), 0, -1)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("index: read summary %s: %w", ref.StreamPrefix(), err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, MaxSummarySize+1))
	if err != nil {
		return nil, fmt.Errorf("index: read summary %s: %w", ref.StreamPrefix(), err)
	}
	sumTol, digests, err := DecodeSummary(b)
	if err != nil {
		log.Warn("index: ignoring the stream summary, rebuilding it from the manifests", "stream", ref.StreamPrefix(), "err", err)
		return nil, nil
	}
	if sumTol != tol {
		return nil, nil
	}
	return digests, nil
}

// ManifestInfo returns the listing entry of the manifest of ref's hour (a
// Stat may report another time precision than List).
func ManifestInfo(ctx context.Context, store storage.Backend, ref storage.StreamRef, hour int64) (storage.ObjectInfo, error) {
	key := ref.ManifestKey(hourTime(hour))
	objs, err := store.List(ctx, ref.ManifestPrefix(), key[:len(key)-len(".zst")], 1)
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("index: list %s: %w", key, err)
	}
	if len(objs) == 0 || objs[0].Key != key {
		return storage.ObjectInfo{}, fmt.Errorf("index: list %s: %w", key, fs.ErrNotExist)
	}
	return objs[0], nil
}

// Summarised is a stream as LoadStream found it.
type Summarised struct {
	// Digests has one entry per manifest storage holds.
	Digests map[int64]HourDigest
	// Unindexed are segment objects found in no manifest, sorted by start.
	Unindexed []Segment
	// Reread counts the manifests read because the summary lacked them or
	// listed them otherwise: when non-zero, the summary is worth rewriting.
	Reread int
}

// Spans returns the coverage of every manifest and unindexed segment.
func (s *Summarised) Spans(tol int64) []Span {
	var spans []Span
	for _, d := range s.Digests {
		spans = append(spans, d.Spans...)
	}
	for _, seg := range s.Unindexed {
		spans = append(spans, Span{Start: seg.Start, End: seg.End()})
	}
	return MergeSpans(spans, tol)
}

// Latest returns the segment Later puts last.
func (s *Summarised) Latest() (Segment, bool) {
	last, ok := LatestOf(s.Unindexed)
	for _, d := range s.Digests {
		if len(d.Spans) > 0 && (!ok || Later(d.Last, last)) {
			last, ok = d.Last, true
		}
	}
	return last, ok
}

// LastManifestHour is the latest hour with a manifest, or -1.
func (s *Summarised) LastManifestHour() int64 {
	last := int64(-1)
	for h := range s.Digests {
		last = max(last, h)
	}
	return last
}

// LoadStream is ScanStorage through ref's summary: it lists the manifests
// and the segment objects, and reads only the manifests the summary does
// not describe as listed, plus those of hours whose objects' starts differ
// from their manifest's (some may be unindexed). With fresh it ignores the
// summary and reads every manifest (an operator's rebuild).
func LoadStream(ctx context.Context, store storage.Backend, ref storage.StreamRef, tol int64, fresh bool, log *slog.Logger) (*Summarised, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fail := func(err error) (*Summarised, error) {
		return nil, fmt.Errorf("index: load %s: %w", ref.StreamPrefix(), err)
	}
	var summary map[int64]HourDigest
	if !fresh {
		var err error
		if summary, err = ReadSummary(ctx, store, ref, tol, log); err != nil {
			return fail(err)
		}
	}
	out := &Summarised{Digests: make(map[int64]HourDigest)}
	listed := make(map[int64]storage.ObjectInfo)
	err := storage.Walk(ctx, store, ref.ManifestPrefix(), func(o storage.ObjectInfo) error {
		_, hour, err := storage.ParseManifestKey(o.Key)
		if err != nil {
			log.Warn("index: rebuild: skipping foreign object", "key", o.Key)
			return nil
		}
		listed[hour] = o
		if d, ok := summary[hour]; ok && d.Size == o.Size && d.MTime == o.ModTime.UnixNano() {
			out.Digests[hour] = d
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	objects := make(map[int64][]storage.ObjectInfo) // by hour
	err = storage.Walk(ctx, store, ref.SegmentPrefix(), func(o storage.ObjectInfo) error {
		if _, start, err := storage.ParseSegmentKey(o.Key); err == nil {
			h := hourStart(start)
			objects[h] = append(objects[h], o)
		} else {
			log.Warn("index: rebuild: skipping foreign object", "key", o.Key)
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	// Read what the summary does not vouch for: manifests it lacks, and
	// those of hours whose objects are not exactly the manifest's.
	read := make(map[int64]bool)
	for h := range listed {
		if _, ok := out.Digests[h]; !ok {
			read[h] = true
		}
	}
	for h, objs := range objects {
		d, ok := out.Digests[h]
		if !ok {
			continue // no manifest (all unindexed) or read anyway
		}
		starts := make([]int64, 0, len(objs))
		for _, o := range objs {
			_, s, _ := storage.ParseSegmentKey(o.Key)
			starts = append(starts, s)
		}
		if StartsHash(starts) != d.Starts {
			read[h] = true
		}
	}
	manifests := make(map[int64][]Segment, len(read))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for h := range read {
		g.Go(func() error {
			segs, err := ReadManifestIfAny(gctx, store, ref, h)
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			manifests[h] = segs
			if _, ok := out.Digests[h]; !ok {
				out.Digests[h] = DigestOf(h, listed[h], segs, tol)
				out.Reread++
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return fail(err)
	}
	// Objects of hours the summary vouches for are all indexed; the others
	// are checked against their manifest (none: all unindexed).
	for h, objs := range objects {
		if _, vouched := out.Digests[h]; vouched && !read[h] {
			continue
		}
		indexed := make(map[int64]bool, len(manifests[h]))
		for _, s := range manifests[h] {
			indexed[s.Start] = true
		}
		for _, o := range objs {
			_, start, _ := storage.ParseSegmentKey(o.Key)
			if indexed[start] {
				continue
			}
			info, err := store.Stat(ctx, o.Key)
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted since the listing
			}
			if err != nil {
				return fail(fmt.Errorf("stat %s: %w", o.Key, err))
			}
			seg, err := SegmentFromObject(info)
			if err != nil {
				log.Warn("index: rebuild: skipping segment object", "key", o.Key, "err", err)
				continue
			}
			out.Unindexed = append(out.Unindexed, seg)
		}
	}
	SortSegments(out.Unindexed)
	return out, nil
}
