// Package indextest is the behaviour suite every index.Index implementation
// passes, plus an in-memory storage fake for unit-level runs.
package indextest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/storage"
)

// Fixture is one index under test and the storage it compacts into.
type Fixture struct {
	Index index.Index
	Store storage.Backend
	// Reopen returns an index over the same storage that has lost all of its
	// own state (a new embedded instance; the Redis keys deleted).
	Reopen func(t *testing.T) index.Index
}

// Trimmer is implemented by indexes that forget coverage retention
// deleted.
type Trimmer interface {
	TrimBefore(ctx context.Context, ref storage.StreamRef, before int64) error
}

// OpenCounter is implemented by indexes that can tell how many open
// (uncompacted) entries they hold for a stream.
type OpenCounter interface {
	OpenCount(ctx context.Context, ref storage.StreamRef) (int, error)
}

// Base is the first hour the suite records in (2024-01-01T00:00Z).
var Base = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()

const hour = index.HourMS

// Run runs the behaviour suite. newFixture is called once per subtest with a
// fresh, empty index and store; the index uses the default gap tolerance.
func Run(t *testing.T, newFixture func(t *testing.T) Fixture) {
	tests := []struct {
		name string
		fn   func(t *testing.T, f Fixture)
	}{
		{"AddLookup", testAddLookup},
		{"ConcurrentAddOneStart", testConcurrentAdd},
		{"Spans", testSpans},
		{"SegmentsAcrossHours", testSegmentsAcrossHours},
		{"Compact", testCompact},
		{"LateSegmentIntoClosedHour", testLateSegment},
		{"Rebuild", testRebuild},
		{"DropStream", testDropStream},
		{"InvalidInput", testInvalid},
		{"TrimBefore", testTrimBefore},
		{"Latest", testLatest},
		{"Head", testHead},
		{"PageSegments", testPageSegments},
		{"CachedManifestsNeverStale", testCacheNeverStale},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newFixture(t)) })
	}
}

// Ref returns a stream reference unique to the test.
func Ref(t *testing.T, stream string) storage.StreamRef {
	return storage.StreamRef{Account: "acct", Camera: "cam", Stream: stream}
}

// Seg returns a 10-s fMP4 segment starting at start, with a head whose
// decode time runs on from the previous 10 s.
func Seg(start int64) index.Segment {
	return index.Segment{Start: start, DurationMS: 10_000, Size: 100 + start%1000, SHA256: fmt.Sprintf("%064x", start), ContentType: "video/mp4", Width: 1920, Height: 1080,
		Head: index.Head{Init: [index.HeadInitBytes]byte{0xab, 1}, Track: 1, Scale: 90_000, TFDT: uint64(start) * 90}}
}

// Store writes the segment object the way the ingest handler does.
func Store(t *testing.T, st storage.Backend, ref storage.StreamRef, seg index.Segment) {
	t.Helper()
	body := bytes.Repeat([]byte{0x42}, int(seg.Size))
	_, err := st.Put(context.Background(), ref.SegmentKey(seg.Start), bytes.NewReader(body), seg.Size,
		storage.PutOptions{ContentType: seg.ContentType, Metadata: index.SegmentMetadata(seg), IfAbsent: true})
	require.NoError(t, err)
}

// Ingest stores seg and records it, as an upload does. An index that
// rebuilds from storage may already know the stored object and answer
// added == false; either way it must hold exactly seg.
func Ingest(t *testing.T, f Fixture, ref storage.StreamRef, seg index.Segment) {
	t.Helper()
	Store(t, f.Store, ref, seg)
	got, _, err := f.Index.Add(context.Background(), ref, seg)
	require.NoError(t, err)
	require.Equal(t, seg, got, "segment %d", seg.Start)
}

func openCount(t *testing.T, ix index.Index, ref storage.StreamRef) int {
	t.Helper()
	oc, ok := ix.(OpenCounter)
	if !ok {
		return -1
	}
	n, err := oc.OpenCount(context.Background(), ref)
	require.NoError(t, err)
	return n
}

func testAddLookup(t *testing.T, f Fixture) {
	ctx := context.Background()
	ref := Ref(t, "s1")
	s := Seg(Base + 5_000)
	Ingest(t, f, ref, s)

	got, err := f.Index.Lookup(ctx, ref, s.Start)
	require.NoError(t, err)
	require.Equal(t, s, got)

	other := s
	other.Size, other.SHA256 = 7, "other"
	existing, added, err := f.Index.Add(ctx, ref, other)
	require.NoError(t, err)
	require.False(t, added)
	require.Equal(t, s, existing, "a duplicate start returns the recorded segment")
	got, err = f.Index.Lookup(ctx, ref, s.Start)
	require.NoError(t, err)
	require.Equal(t, s, got, "a duplicate add changes nothing")

	_, err = f.Index.Lookup(ctx, ref, s.Start+1)
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = f.Index.Lookup(ctx, Ref(t, "unknown"), s.Start)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.NoError(t, f.Index.Ping(ctx))
}

func testConcurrentAdd(t *testing.T, f Fixture) {
	ctx := context.Background()
	ref := Ref(t, "s1")
	const n = 50
	type result struct {
		seg   index.Segment
		added bool
		err   error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := Seg(Base)
			s.Size = int64(i + 1)
			seg, added, err := f.Index.Add(ctx, ref, s)
			results[i] = result{seg, added, err}
		}()
	}
	wg.Wait()
	winners := 0
	var winner index.Segment
	for _, r := range results {
		require.NoError(t, r.err)
		if r.added {
			winners++
			winner = r.seg
		}
	}
	require.Equal(t, 1, winners, "exactly one concurrent Add of one start wins")
	for _, r := range results {
		require.Equal(t, winner, r.seg, "every caller sees the winning segment")
	}
	got, err := f.Index.Lookup(ctx, ref, Base)
	require.NoError(t, err)
	require.Equal(t, winner, got)
}

func testSpans(t *testing.T, f Fixture) {
	ctx := context.Background()
	ref := Ref(t, "s1")
	// 0-30 s contiguous (added out of order), a 500-ms gap (within the 1-s
	// tolerance) to 40.5 s, then a 20-s gap and 60-70 s.
	for _, start := range []int64{20_000, 0, 10_000, 30_500, 60_000} {
		Ingest(t, f, ref, Seg(Base+start))
	}
	spans, err := f.Index.Spans(ctx, ref, Base-hour, Base+hour)
	require.NoError(t, err)
	require.Equal(t, []index.Span{{Start: Base, End: Base + 40_500}, {Start: Base + 60_000, End: Base + 70_000}}, spans)

	spans, err = f.Index.Spans(ctx, ref, Base+45_000, Base+65_000)
	require.NoError(t, err)
	require.Equal(t, []index.Span{{Start: Base + 60_000, End: Base + 70_000}}, spans)
	spans, err = f.Index.Spans(ctx, ref, Base+41_000, Base+59_000)
	require.NoError(t, err)
	require.Empty(t, spans)

	// Filling the gap joins the spans.
	Ingest(t, f, ref, Seg(Base+40_500))
	Ingest(t, f, ref, Seg(Base+50_500))
	spans, err = f.Index.Spans(ctx, ref, Base, Base+hour)
	require.NoError(t, err)
	require.Equal(t, []index.Span{{Start: Base, End: Base + 70_000}}, spans)
}

func allSegments(t *testing.T, ix index.Index, ref storage.StreamRef) ([]index.Segment, []index.Span) {
	t.Helper()
	ctx := context.Background()
	segs, err := ix.Segments(ctx, ref, Base-24*hour, Base+48*hour)
	require.NoError(t, err)
	spans, err := ix.Spans(ctx, ref, Base-24*hour, Base+48*hour)
	require.NoError(t, err)
	return segs, spans
}

func starts(segs []index.Segment) []int64 {
	out := make([]int64, 0, len(segs))
	for _, s := range segs {
		out = append(out, s.Start)
	}
	return out
}

func testSegmentsAcrossHours(t *testing.T, f Fixture) {
	ctx := context.Background()
	ref := Ref(t, "s1")
	// Segments every 10 s from 00:59:30 to 01:00:20; the one at 00:59:55
	// straddles the hour boundary.
	var want []int64
	for _, start := range []int64{hour - 30_000, hour - 20_000, hour - 5_000, hour + 5_000, hour + 15_000} {
		Ingest(t, f, ref, Seg(Base+start))
		want = append(want, Base+start)
	}
	segs, err := f.Index.Segments(ctx, ref, Base, Base+2*hour)
	require.NoError(t, err)
	require.Equal(t, want, starts(segs))

	// A range starting inside a segment includes it.
	segs, err = f.Index.Segments(ctx, ref, Base+hour, Base+hour+10_000)
	require.NoError(t, err)
	require.Equal(t, []int64{Base + hour - 5_000, Base + hour + 5_000}, starts(segs))
	// The end is exclusive.
	segs, err = f.Index.Segments(ctx, ref, Base+hour-20_000, Base+hour-5_000)
	require.NoError(t, err)
	require.Equal(t, []int64{Base + hour - 20_000}, starts(segs))
	segs, err = f.Index.Segments(ctx, ref, Base+2*hour, Base+3*hour)
	require.NoError(t, err)
	require.Empty(t, segs)

	spans, err := f.Index.Spans(ctx, ref, Base, Base+2*hour)
	require.NoError(t, err)
	require.Equal(t, []index.Span{{Start: Base + hour - 30_000, End: Base + hour - 10_000}, {Start: Base + hour - 5_000, End: Base + hour + 25_000}}, spans)
}

func testCompact(t *testing.T, f Fixture) {
	ctx := context.Background()
	ref := Ref(t, "s1")
	other := Ref(t, "s2")
	for h := int64(0); h < 3; h++ {
		for i := int64(0); i < 4; i++ {
			Ingest(t, f, ref, Seg(Base+h*hour+i*10_000))
		}
	}
	Ingest(t, f, other, Seg(Base+30_000))
	beforeSegs, beforeSpans := allSegments(t, f.Index, ref)
	require.Len(t, beforeSegs, 12)

	// Hours 0 and 1 end by the cutoff; hour 2 stays open.
	require.NoError(t, f.Index.Compact(ctx, Base+2*hour))
	for h := int64(0); h < 2; h++ {
		segs, err := index.ReadManifest(ctx, f.Store, ref, Base+h*hour)
		require.NoError(t, err)
		require.Equal(t, beforeSegs[h*4:h*4+4], segs)
	}
	_, err := index.ReadManifest(ctx, f.Store, ref, Base+2*hour)
	require.ErrorIs(t, err, fs.ErrNotExist, "an open hour has no manifest")
	if n := openCount(t, f.Index, ref); n >= 0 {
		require.Equal(t, 4, n, "only the open hour's entries stay in the index")
	}
	otherSegs, err := index.ReadManifest(ctx, f.Store, other, Base)
	require.NoError(t, err)
	require.Len(t, otherSegs, 1)

	afterSegs, afterSpans := allSegments(t, f.Index, ref)
	require.Equal(t, beforeSegs, afterSegs, "reads after compaction are identical")
	require.Equal(t, beforeSpans, afterSpans)
	got, err := f.Index.Lookup(ctx, ref, Base+10_000)
	require.NoError(t, err)
	require.Equal(t, beforeSegs[1], got)
	existing, added, err := f.Index.Add(ctx, ref, Seg(Base+10_000))
	require.NoError(t, err)
	require.False(t, added, "a segment in a manifest is still a duplicate")
	require.Equal(t, beforeSegs[1], existing)

	// Compacting again changes nothing; compacting everything empties the index.
	require.NoError(t, f.Index.Compact(ctx, Base+2*hour))
	require.NoError(t, f.Index.Compact(ctx, Base+10*hour))
	if n := openCount(t, f.Index, ref); n >= 0 {
		require.Equal(t, 0, n)
	}
	afterSegs, afterSpans = allSegments(t, f.Index, ref)
	require.Equal(t, beforeSegs, afterSegs)
	require.Equal(t, beforeSpans, afterSpans)
}

func testLateSegment(t *testing.T, f Fixture) {
	ctx := context.Background()
	ref := Ref(t, "s1")
	Ingest(t, f, ref, Seg(Base))
	Ingest(t, f, ref, Seg(Base+20_000))
	require.NoError(t, f.Index.Compact(ctx, Base+hour))

	// A backlog segment fills the gap in the closed hour.
	late := Seg(Base + 10_000)
	Ingest(t, f, ref, late)
	got, err := f.Index.Lookup(ctx, ref, late.Start)
	require.NoError(t, err)
	require.Equal(t, late, got)
	segs, spans := allSegments(t, f.Index, ref)
	require.Equal(t, []int64{Base, Base + 10_000, Base + 20_000}, starts(segs))
	require.Equal(t, []index.Span{{Start: Base, End: Base + 30_000}}, spans)
	dup, added, err := f.Index.Add(ctx, ref, Seg(late.Start))
	require.NoError(t, err)
	require.False(t, added)
	require.Equal(t, late, dup)

	// The next compaction lands it in the hour's manifest.
	require.NoError(t, f.Index.Compact(ctx, Base+hour))
	m, err := index.ReadManifest(ctx, f.Store, ref, Base)
	require.NoError(t, err)
	require.Equal(t, []int64{Base, Base + 10_000, Base + 20_000}, starts(m))
	if n := openCount(t, f.Index, ref); n >= 0 {
		require.Equal(t, 0, n)
	}
	after, afterSpans := allSegments(t, f.Index, ref)
	require.Equal(t, segs, after)
	require.Equal(t, spans, afterSpans)
}

func testRebuild(t *testing.T, f Fixture) {
	ctx := context.Background()
	ref := Ref(t, "s1")
	var all []index.Segment
	for h := int64(0); h < 3; h++ {
		for i := int64(0); i < 3; i++ {
			s := Seg(Base + h*hour + i*10_000)
			all = append(all, s)
			Ingest(t, f, ref, s)
		}
	}
	require.NoError(t, f.Index.Compact(ctx, Base+hour))
	// Stored but never indexed (a crash between storage and index), in a
	// closed hour and in open ones.
	for _, start := range []int64{Base + 40_000, Base + 2*hour + 30_000, Base + 5*hour} {
		s := Seg(start)
		Store(t, f.Store, ref, s)
		all = append(all, s)
	}
	index.SortSegments(all)
	wantSpans := index.SpansOf(all, index.DefaultGapTolerance.Milliseconds())

	check := func(ix index.Index) {
		t.Helper()
		segs, spans := allSegments(t, ix, ref)
		require.Equal(t, all, segs)
		require.Equal(t, wantSpans, spans)
		for _, s := range all {
			got, err := ix.Lookup(ctx, ref, s.Start)
			require.NoError(t, err)
			require.Equal(t, s, got)
		}
	}

	require.NoError(t, f.Index.Rebuild(ctx, ref))
	check(f.Index)

	if f.Reopen != nil {
		fresh := f.Reopen(t)
		require.NoError(t, fresh.Rebuild(ctx, ref))
		check(fresh)
		// Rebuilt entries compact like any others.
		require.NoError(t, fresh.Compact(ctx, Base+10*hour))
		if n := openCount(t, fresh, ref); n >= 0 {
			require.Equal(t, 0, n)
		}
		check(fresh)
		f.Index = fresh
	}
	// A rebuild of a fully compacted stream changes nothing.
	require.NoError(t, f.Index.Rebuild(ctx, ref))
	check(f.Index)
}

func testDropStream(t *testing.T, f Fixture) {
	ctx := context.Background()
	ref := Ref(t, "s1")
	keep := Ref(t, "s2")
	for i := int64(0); i < 3; i++ {
		Ingest(t, f, ref, Seg(Base+i*hour))
		Ingest(t, f, keep, Seg(Base+i*hour))
	}
	require.NoError(t, f.Index.Compact(ctx, Base+hour))
	keepSegs, keepSpans := allSegments(t, f.Index, keep)

	// A purge deletes the objects, then drops the index entries.
	Purge(t, f, ref)

	segs, spans := allSegments(t, f.Index, ref)
	require.Empty(t, segs)
	require.Empty(t, spans)
	_, err := f.Index.Lookup(ctx, ref, Base+2*hour)
	require.ErrorIs(t, err, fs.ErrNotExist)
	if n := openCount(t, f.Index, ref); n >= 0 {
		require.Equal(t, 0, n)
	}
	require.NoError(t, f.Index.Compact(ctx, Base+10*hour))
	_, err = index.ReadManifest(ctx, f.Store, ref, Base+2*hour)
	require.ErrorIs(t, err, fs.ErrNotExist, "a dropped stream gets no manifests")

	gotSegs, gotSpans := allSegments(t, f.Index, keep)
	require.Equal(t, keepSegs, gotSegs, "other streams are untouched")
	require.Equal(t, keepSpans, gotSpans)

	// The stream can start over.
	Ingest(t, f, ref, Seg(Base))
	segs, _ = allSegments(t, f.Index, ref)
	require.Equal(t, []int64{Base}, starts(segs))
}

// Purge deletes every object of ref, then drops its index entries, as a
// purge job does.
func Purge(t *testing.T, f Fixture, ref storage.StreamRef) {
	t.Helper()
	ctx := context.Background()
	var keys []string
	require.NoError(t, storage.Walk(ctx, f.Store, ref.StreamPrefix(), func(o storage.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}))
	require.NoError(t, f.Store.Delete(ctx, keys))
	require.NoError(t, f.Index.DropStream(ctx, ref))
}

func testInvalid(t *testing.T, f Fixture) {
	ctx := context.Background()
	bad := storage.StreamRef{Account: "a/b", Camera: "c", Stream: "s"}
	_, _, err := f.Index.Add(ctx, bad, Seg(Base))
	require.Error(t, err)
	_, _, err = f.Index.Add(ctx, Ref(t, "s1"), index.Segment{Start: -1})
	require.Error(t, err)
	_, _, err = f.Index.Add(ctx, Ref(t, "s1"), index.Segment{Start: Base, DurationMS: -5})
	require.Error(t, err)
	require.False(t, errors.Is(err, index.ErrUnavailable), "bad input is not an outage")
}

func testTrimBefore(t *testing.T, f Fixture) {
	tr, ok := f.Index.(Trimmer)
	if !ok {
		t.Skip("index has no TrimBefore")
	}
	ctx := context.Background()
	ref := Ref(t, "s1")
	// Two spans in hour 0 (compacted), one straddling into hour 1 (open).
	for _, start := range []int64{0, 10_000, 60_000, hour - 5_000, hour + 5_000} {
		Ingest(t, f, ref, Seg(Base+start))
	}
	require.NoError(t, f.Index.Compact(ctx, Base+hour))
	require.NoError(t, tr.TrimBefore(ctx, ref, Base+hour+10_000))
	_, spans := allSegments(t, f.Index, ref)
	require.Equal(t, []index.Span{{Start: Base + hour + 10_000, End: Base + hour + 15_000}}, spans)
	if n := openCount(t, f.Index, ref); n >= 0 {
		require.Equal(t, 0, n, "open entries before the cut are dropped")
	}
	// Coverage added later is unaffected.
	Ingest(t, f, ref, Seg(Base+hour+15_000))
	_, spans = allSegments(t, f.Index, ref)
	require.Equal(t, []index.Span{{Start: Base + hour + 10_000, End: Base + hour + 25_000}}, spans)
}

func testLatest(t *testing.T, f Fixture) {
	ctx := context.Background()
	ref := Ref(t, "s1")
	_, _, err := f.Index.Latest(ctx, ref)
	require.ErrorIs(t, err, fs.ErrNotExist, "a stream without segments")

	before := time.Now().UnixMilli()
	a, b := Seg(Base+hour), Seg(Base+hour+10_000)
	Ingest(t, f, ref, b)
	Ingest(t, f, ref, a) // arrives later but ends earlier
	got, recv, err := f.Index.Latest(ctx, ref)
	require.NoError(t, err)
	require.Equal(t, b, got)
	require.GreaterOrEqual(t, recv, before, "received at the Add")
	require.LessOrEqual(t, recv, time.Now().UnixMilli())

	// A backlog segment from an earlier hour does not displace it; a
	// shorter segment starting later, ending at the same instant, does.
	Ingest(t, f, ref, Seg(Base))
	tail := Seg(Base + hour + 15_000)
	tail.DurationMS = 5_000
	Ingest(t, f, ref, tail)
	got, _, err = f.Index.Latest(ctx, ref)
	require.NoError(t, err)
	require.Equal(t, tail, got)

	// Compaction moves it to a manifest; Latest still answers.
	require.NoError(t, f.Index.Compact(ctx, Base+3*hour))
	got, _, err = f.Index.Latest(ctx, ref)
	require.NoError(t, err)
	require.Equal(t, tail, got)

	// Rebuilt from storage alone: the same segment, its receipt time unknown.
	if f.Reopen != nil {
		fresh := f.Reopen(t)
		require.NoError(t, fresh.Rebuild(ctx, ref))
		got, recv, err = fresh.Latest(ctx, ref)
		require.NoError(t, err)
		require.Equal(t, tail, got)
		require.Zero(t, recv)
		f.Index = fresh
	}

	Purge(t, f, ref)
	_, _, err = f.Index.Latest(ctx, ref)
	require.ErrorIs(t, err, fs.ErrNotExist, "a dropped stream")
}

// testHead round-trips the three kinds of head (with a decode time,
// without one, unknown as in entries written before heads existed) through
// Add, compaction and a rebuild from storage.
func testHead(t *testing.T, f Fixture) {
	ctx := context.Background()
	ref := Ref(t, "s1")
	timed, untimed, unknown := Seg(Base), Seg(Base+10_000), Seg(Base+hour+5_000)
	untimed.Head = index.Head{Init: [index.HeadInitBytes]byte{7, 6, 5, 4, 3, 2, 1, 0xff}}
	unknown.Head = index.Head{}
	want := []index.Segment{timed, untimed, unknown}
	for _, s := range want {
		Ingest(t, f, ref, s)
	}
	check := func(ix index.Index, what string) {
		t.Helper()
		segs, _ := allSegments(t, ix, ref)
		require.Equal(t, want, segs, what)
		for _, s := range want {
			got, err := ix.Lookup(ctx, ref, s.Start)
			require.NoError(t, err)
			require.Equal(t, s.Head, got.Head, "%s: head of %d", what, s.Start)
		}
	}
	check(f.Index, "open")
	require.NoError(t, f.Index.Compact(ctx, Base+2*hour))
	check(f.Index, "compacted")
	require.NoError(t, f.Index.Rebuild(ctx, ref))
	check(f.Index, "rebuilt")
	if f.Reopen != nil {
		check(f.Reopen(t), "reopened")
	}
}

// testPageSegments pages through compacted and open hours with gaps: the
// pages together are the unpaged list, each segment once.
func testPageSegments(t *testing.T, f Fixture) {
	ctx := context.Background()
	ref := Ref(t, "s1")
	// Hour 0: 0-40 s and one straddling into hour 1; hour 1: two more; a
	// gap of hours 2-4; hour 5: two.
	for _, start := range []int64{0, 10_000, 20_000, 30_000, hour - 5_000, hour + 5_000, hour + 30_000, 5*hour + 1_000, 5*hour + 11_000} {
		Ingest(t, f, ref, Seg(Base+start))
	}
	require.NoError(t, f.Index.Compact(ctx, Base+hour)) // hour 0 in a manifest
	from, to := Base+5_000, Base+6*hour                 // inside the first segment
	all, err := f.Index.Segments(ctx, ref, from, to)
	require.NoError(t, err)
	require.Len(t, all, 9)
	for _, limit := range []int{1, 2, 4, 9, 100} {
		var got []index.Segment
		cursor, pages := int64(from), 0
		for {
			page, next, err := index.PageSegments(ctx, f.Index, ref, from, to, cursor, limit)
			require.NoError(t, err)
			require.LessOrEqual(t, len(page), limit)
			got = append(got, page...)
			pages++
			if next < 0 {
				break
			}
			require.Len(t, page, limit, "a page before the last is full")
			require.Greater(t, next, cursor)
			cursor = next
		}
		require.Equal(t, starts(all), starts(got), "limit %d", limit)
		require.Equal(t, all, got)
		require.Equal(t, (len(all)+limit-1)/limit, pages, "limit %d", limit)
	}
	// A window with no coverage, and an exclusive end.
	page, next, err := index.PageSegments(ctx, f.Index, ref, Base+2*hour, Base+5*hour, Base+2*hour, 10)
	require.NoError(t, err)
	require.Empty(t, page)
	require.Equal(t, int64(-1), next)
	page, next, err = index.PageSegments(ctx, f.Index, ref, Base+hour, Base+hour+30_000, Base+hour, 10)
	require.NoError(t, err)
	require.Equal(t, []int64{Base + hour - 5_000, Base + hour + 5_000}, starts(page))
	require.Equal(t, int64(-1), next)
}

// readAll lists and looks up everything in hours 0-2 twice (the second
// time from whatever the index cached) and checks both against want.
func readAll(t *testing.T, ix index.Index, ref storage.StreamRef, want []int64, gone ...int64) {
	t.Helper()
	ctx := context.Background()
	for range 2 {
		segs, err := ix.Segments(ctx, ref, Base, Base+3*hour)
		require.NoError(t, err)
		require.Equal(t, want, starts(segs))
		day, err := ix.Segments(ctx, ref, Base-23*hour, Base+hour)
		require.NoError(t, err)
		inHour0 := []int64{}
		for _, s := range want {
			if s < Base+hour {
				inHour0 = append(inHour0, s)
			}
		}
		require.Equal(t, inHour0, starts(day)[:len(inHour0)], "a window ending with hour 0")
		require.Len(t, day, len(inHour0))
		for _, s := range want {
			got, err := ix.Lookup(ctx, ref, s)
			require.NoError(t, err)
			require.Equal(t, s, got.Start)
		}
		for _, s := range gone {
			_, err := ix.Lookup(ctx, ref, s)
			require.ErrorIs(t, err, fs.ErrNotExist, "segment %d is gone", s)
		}
	}
}

// testCacheNeverStale reads closed hours (so that an index that caches
// decoded manifests holds them), then changes each in every way vigil
// does: a late segment compacted in, retention rewriting or deleting a
// manifest (then TrimBefore), a purge (then DropStream), a rebuild. No
// read afterwards may show the old content.
func testCacheNeverStale(t *testing.T, f Fixture) {
	ctx := context.Background()
	ref := Ref(t, "s1")
	for _, start := range []int64{0, 20_000, hour, hour + 20_000} {
		Ingest(t, f, ref, Seg(Base+start))
	}
	require.NoError(t, f.Index.Compact(ctx, Base+2*hour))
	readAll(t, f.Index, ref, []int64{Base, Base + 20_000, Base + hour, Base + hour + 20_000})

	// A backlog segment into closed hour 0, open and then compacted.
	Ingest(t, f, ref, Seg(Base+10_000))
	readAll(t, f.Index, ref, []int64{Base, Base + 10_000, Base + 20_000, Base + hour, Base + hour + 20_000})
	require.NoError(t, f.Index.Compact(ctx, Base+2*hour))
	readAll(t, f.Index, ref, []int64{Base, Base + 10_000, Base + 20_000, Base + hour, Base + hour + 20_000})

	tr, ok := f.Index.(Trimmer)
	if !ok {
		return
	}
	// Retention as the sweeper does it: hour 0 expires whole (its
	// manifest deleted), hour 1's first segment expires (its manifest
	// rewritten without it), then the index is trimmed.
	require.NoError(t, f.Store.Delete(ctx, []string{ref.ManifestKey(time.UnixMilli(Base)), ref.SegmentKey(Base),
		ref.SegmentKey(Base + 10_000), ref.SegmentKey(Base + 20_000), ref.SegmentKey(Base + hour)}))
	require.NoError(t, index.WriteManifest(ctx, f.Store, ref, Base+hour, []index.Segment{Seg(Base + hour + 20_000)}))
	require.NoError(t, tr.TrimBefore(ctx, ref, Base+hour+20_000))
	readAll(t, f.Index, ref, []int64{Base + hour + 20_000}, Base, Base+10_000, Base+hour)

	// A purge, then the stream starts over in the same hours.
	Purge(t, f, ref)
	readAll(t, f.Index, ref, []int64{}, Base+hour+20_000)
	Ingest(t, f, ref, Seg(Base+hour+30_000))
	require.NoError(t, f.Index.Compact(ctx, Base+2*hour))
	readAll(t, f.Index, ref, []int64{Base + hour + 30_000}, Base+hour+20_000)

	// An operator rewrites a manifest behind the index's back and rebuilds.
	require.NoError(t, index.WriteManifest(ctx, f.Store, ref, Base+hour, []index.Segment{Seg(Base + hour + 30_000), Seg(Base + hour + 40_000)}))
	Store(t, f.Store, ref, Seg(Base+hour+40_000))
	require.NoError(t, f.Index.Rebuild(ctx, ref))
	readAll(t, f.Index, ref, []int64{Base + hour + 30_000, Base + hour + 40_000})
}
