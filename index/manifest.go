package index

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/vigilcloud/vigil/storage"
)

// An hour manifest is one zstd frame holding a JSON document
//
//	{"v":1,"hour":<hour start, Unix ms>,"segments":[<Segment>...]}
//
// with the segments sorted by start, each starting inside the hour. JSON
// keeps manifests readable with `zstd -d | jq`; zstd makes them small.

// ManifestVersion is the manifest format written by EncodeManifest.
const ManifestVersion = 1

// MaxManifestSize bounds a manifest, compressed and decompressed. An hour of
// 1-s segments is about 0.5 MB of JSON; anything near this is corrupt.
const MaxManifestSize = 16 << 20

// ErrCorruptManifest marks a manifest that cannot be decoded: truncated,
// corrupt, oversized or of an unknown version.
var ErrCorruptManifest = errors.New("index: corrupt manifest")

const manifestContentType = "application/zstd"

type manifestDoc struct {
	Version  int       `json:"v"`
	Hour     int64     `json:"hour"`
	Segments []Segment `json:"segments"`
}

// zstd encoders and decoders are expensive to create and safe for
// concurrent EncodeAll/DecodeAll, so the package shares one of each. They
// hold no state that callers can observe.
var (
	zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
		if err != nil {
			panic(err) // only for invalid options
		}
		return e
	})
	zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(MaxManifestSize), zstd.WithDecoderConcurrency(0))
		if err != nil {
			panic(err)
		}
		return d
	})
)

// EncodeManifest encodes the segments of the hour starting at hour (Unix
// ms). segs may be in any order; they must have distinct starts inside the
// hour.
func EncodeManifest(hour int64, segs []Segment) ([]byte, error) {
	sorted := append(make([]Segment, 0, len(segs)), segs...)
	SortSegments(sorted)
	if err := checkManifest(hour, sorted); err != nil {
		return nil, fmt.Errorf("index: encode manifest: %w", err)
	}
	js, err := json.Marshal(manifestDoc{Version: ManifestVersion, Hour: hour, Segments: sorted})
	if err != nil {
		return nil, fmt.Errorf("index: encode manifest: %w", err)
	}
	if len(js) > MaxManifestSize {
		return nil, fmt.Errorf("index: encode manifest: %d bytes exceeds %d", len(js), MaxManifestSize)
	}
	return zstdEncoder().EncodeAll(js, nil), nil
}

// DecodeManifest decodes a manifest. Any defect is an error matching
// ErrCorruptManifest, never an empty result.
func DecodeManifest(b []byte) (hour int64, segs []Segment, err error) {
	if len(b) > MaxManifestSize {
		return 0, nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrCorruptManifest, len(b), MaxManifestSize)
	}
	if len(b) == 0 {
		return 0, nil, fmt.Errorf("%w: empty", ErrCorruptManifest)
	}
	js, err := zstdDecoder().DecodeAll(b, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: zstd: %v", ErrCorruptManifest, err)
	}
	if len(js) > MaxManifestSize {
		return 0, nil, fmt.Errorf("%w: decompressed %d bytes exceeds %d", ErrCorruptManifest, len(js), MaxManifestSize)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var doc struct {
		Version  int        `json:"v"`
		Hour     int64      `json:"hour"`
		Segments *[]Segment `json:"segments"` // nil: missing, a defect
	}
	if err := dec.Decode(&doc); err != nil {
		return 0, nil, fmt.Errorf("%w: json: %v", ErrCorruptManifest, err)
	}
	if dec.More() {
		return 0, nil, fmt.Errorf("%w: trailing data", ErrCorruptManifest)
	}
	if doc.Version != ManifestVersion {
		return 0, nil, fmt.Errorf("%w: unknown version %d", ErrCorruptManifest, doc.Version)
	}
	if doc.Segments == nil {
		return 0, nil, fmt.Errorf("%w: no segments", ErrCorruptManifest)
	}
	if err := checkManifest(doc.Hour, *doc.Segments); err != nil {
		return 0, nil, fmt.Errorf("%w: %v", ErrCorruptManifest, err)
	}
	return doc.Hour, *doc.Segments, nil
}

func checkManifest(hour int64, sorted []Segment) error {
	if hour < 0 || hour%hourMS != 0 {
		return fmt.Errorf("hour %d is not an hour start", hour)
	}
	for i, s := range sorted {
		if err := ValidateSegment(s); err != nil {
			return err
		}
		if s.Start < hour || s.Start >= hour+hourMS {
			return fmt.Errorf("segment %d outside hour %d", s.Start, hour)
		}
		if i > 0 && s.Start <= sorted[i-1].Start {
			return fmt.Errorf("segments not sorted or duplicated at %d", s.Start)
		}
	}
	return nil
}

func hourTime(hour int64) time.Time { return time.UnixMilli(hour).UTC() }

// ReadManifest reads and decodes the manifest of ref's hour (Unix ms). A
// missing manifest is an error matching fs.ErrNotExist; a defective one
// matches ErrCorruptManifest.
func ReadManifest(ctx context.Context, store storage.Backend, ref storage.StreamRef, hour int64) ([]Segment, error) {
	key := ref.ManifestKey(hourTime(hour))
	rc, _, err := store.Get(ctx, key, 0, -1)
	if err != nil {
		return nil, fmt.Errorf("index: read manifest %s: %w", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("index: read manifest %s: %w", key, err)
	}
	h, segs, err := DecodeManifest(b)
	if err != nil {
		return nil, fmt.Errorf("index: manifest %s: %w", key, err)
	}
	if h != hour {
		return nil, fmt.Errorf("index: manifest %s: %w: holds hour %d", key, ErrCorruptManifest, h)
	}
	return segs, nil
}

// ReadManifestIfAny is ReadManifest with a missing manifest read as empty.
func ReadManifestIfAny(ctx context.Context, store storage.Backend, ref storage.StreamRef, hour int64) ([]Segment, error) {
	segs, err := ReadManifest(ctx, store, ref, hour)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return segs, err
}

// WriteManifest writes (overwrites) the manifest of ref's hour.
func WriteManifest(ctx context.Context, store storage.Backend, ref storage.StreamRef, hour int64, segs []Segment) error {
	b, err := EncodeManifest(hour, segs)
	if err != nil {
		return err
	}
	key := ref.ManifestKey(hourTime(hour))
	if _, err := store.Put(ctx, key, bytes.NewReader(b), int64(len(b)), storage.PutOptions{ContentType: manifestContentType}); err != nil {
		return fmt.Errorf("index: write manifest %s: %w", key, err)
	}
	return nil
}

// ManifestHours lists the hours in [first, last] (hour starts, Unix ms) that
// have a manifest, in order.
func ManifestHours(ctx context.Context, store storage.Backend, ref storage.StreamRef, first, last int64) ([]int64, error) {
	prefix := ref.ManifestPrefix()
	// "…/HH" sorts just before "…/HH.zst", so listing after it includes first.
	after := strings.TrimSuffix(ref.ManifestKey(hourTime(first)), ".zst")
	lastKey := ref.ManifestKey(hourTime(last))
	var hours []int64
	const page = 1000
	for {
		objs, err := store.List(ctx, prefix, after, page)
		if err != nil {
			return nil, fmt.Errorf("index: list manifests %s: %w", prefix, err)
		}
		for _, o := range objs {
			if o.Key > lastKey {
				return hours, nil
			}
			if _, h, err := storage.ParseManifestKey(o.Key); err == nil {
				hours = append(hours, h)
			}
		}
		if len(objs) < page {
			return hours, nil
		}
		after = objs[len(objs)-1].Key
	}
}

// ReadManifests reads the manifests of hours concurrently, through c (nil:
// none) under the versions ver names (nil: ""), and returns all their
// segments, sorted by start. A manifest deleted meanwhile is skipped.
func ReadManifests(ctx context.Context, store storage.Backend, c *ManifestCache, ver Version, ref storage.StreamRef, hours []int64) ([]Segment, error) {
	results := make([][]Segment, len(hours))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, h := range hours {
		v := ""
		if ver != nil {
			v = ver(h)
		}
		if segs, ok := c.Get(ref, h, v); ok {
			results[i] = segs
			continue
		}
		g.Go(func() error {
			segs, err := readAndKeep(gctx, store, c, ref, h, v)
			results[i] = segs
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	n := 0
	for _, r := range results {
		n += len(r)
	}
	all := make([]Segment, 0, n) // a month is some 430,000 segments: grow once
	for _, r := range results {
		all = append(all, r...)
	}
	return all, nil
}

// ManifestSegments returns the segments recorded in ref's manifests that
// overlap [from, to), read through c (see ReadManifests).
func ManifestSegments(ctx context.Context, store storage.Backend, c *ManifestCache, ver Version, ref storage.StreamRef, from, to int64) ([]Segment, error) {
	if to <= from {
		return nil, nil
	}
	first, last := HoursIn(from, to)
	hours, err := ManifestHours(ctx, store, ref, first, last)
	if err != nil {
		return nil, err
	}
	segs, err := ReadManifests(ctx, store, c, ver, ref, hours)
	if err != nil {
		return nil, err
	}
	return overlappingOwned(segs, from, to), nil // segs is a fresh copy
}
