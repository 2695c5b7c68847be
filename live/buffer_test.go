package live

import (
	"bytes"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeMoof is a part that starts with a moof box of n bytes.
func fakeMoof(n int, fill byte) []byte {
	b := bytes.Repeat([]byte{fill}, n)
	copy(b, []byte{0, 0, 0, 16, 'm', 'o', 'o', 'f'})
	return b
}

// value reads a gauge or counter.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestSessionLifecycle(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	b := New(Config{Now: clk.now, Registerer: prometheus.NewRegistry()})
	_, ok := b.Snapshot("s")
	require.False(t, ok, "a stream never recorded here")

	init := []byte("init-section")
	b.Open("s", 1000, init)
	snap, ok := b.Snapshot("s")
	require.True(t, ok)
	require.Len(t, snap.Segments, 1)
	assert.Equal(t, int64(0), snap.NextPart)
	changed := snap.Changed

	b.Part("s", 1000, [][]byte{fakeMoof(20, 1)[:10], fakeMoof(20, 1)[10:]}, time.Second, true)
	select {
	case <-changed:
	default:
		t.Fatal("a new part does not wake the waiters")
	}
	b.Part("s", 1000, [][]byte{fakeMoof(30, 2)}, 1040*time.Millisecond, false)
	snap, _ = b.Snapshot("s")
	seg := snap.Segments[0]
	require.Len(t, seg.Parts, 2)
	assert.Equal(t, Part{N: 0, Duration: time.Second, Independent: true, Offset: 0, Size: 20, Held: true}, seg.Parts[0])
	assert.Equal(t, Part{N: 1, Duration: 1040 * time.Millisecond, Offset: 20, Size: 30, Held: true}, seg.Parts[1])
	assert.True(t, seg.Head.Known(), "the head is known from the first part on")
	assert.Equal(t, int64(len(init)), seg.InitSize)
	assert.Equal(t, 1040*time.Millisecond, snap.PartTarget)
	assert.Equal(t, int64(2), snap.NextPart)

	data, pseg, part, ok := b.PartData("s", snap.Session, 1)
	require.True(t, ok)
	assert.Equal(t, fakeMoof(30, 2), data)
	assert.Equal(t, int64(1000), pseg.Start)
	assert.Equal(t, int64(20), part.Offset)
	_, _, _, ok = b.PartData("s", snap.Session, 2)
	assert.False(t, ok, "a part not cut yet")
	_, _, _, ok = b.PartData("s", "0123456789abcdef", 1)
	assert.False(t, ok, "another session's part")

	got, ok := b.Init("s", 1000)
	require.True(t, ok)
	assert.Equal(t, init, got)
	_, ok = b.Media("s", 1000)
	assert.False(t, ok, "the media of an open segment")

	// Out of order: a part or close for another segment is ignored.
	b.Part("s", 999, [][]byte{fakeMoof(10, 3)}, time.Second, true)
	b.Close("s", 999, 2040)
	b.Close("s", 1000, 2040)
	b.Part("s", 1000, [][]byte{fakeMoof(10, 3)}, time.Second, true)
	snap, _ = b.Snapshot("s")
	require.Len(t, snap.Segments[0].Parts, 2)
	assert.True(t, snap.Segments[0].Closed)
	assert.Equal(t, int64(2040), snap.Segments[0].DurationMS)
	frags, ok := b.Media("s", 1000)
	require.True(t, ok)
	assert.Equal(t, [][]byte{fakeMoof(20, 1), fakeMoof(30, 2)}, frags)

	// Stored: the bytes go, the metadata stays.
	b.Open("s", 3040, init)
	b.Stored("s", 1000)
	b.Stored("s", 5)
	snap, _ = b.Snapshot("s")
	assert.True(t, snap.Segments[0].Stored)
	assert.False(t, snap.Segments[0].Parts[0].Held)
	data, _, _, ok = b.PartData("s", snap.Session, 0)
	assert.True(t, ok)
	assert.Nil(t, data, "a stored part is served from storage")
	_, ok = b.Init("s", 1000)
	assert.False(t, ok)
	assert.Equal(t, int64(1), snap.Segments[1].Seq)

	// End: the open segment without parts goes; the session lingers.
	b.End("s")
	snap, ok = b.Snapshot("s")
	require.True(t, ok)
	assert.True(t, snap.Ended)
	require.Len(t, snap.Segments, 1)
	clk.t = clk.t.Add(time.Minute)
	_, ok = b.Snapshot("s")
	assert.False(t, ok, "an ended session is forgotten after Linger")
	assert.Zero(t, value(b.m.bytes))
	assert.Zero(t, value(b.m.streams))

	// A new publish is a new session.
	old := snap.Session
	b.Open("s", 9000, init)
	snap, _ = b.Snapshot("s")
	assert.NotEqual(t, old, snap.Session)
	assert.True(t, ValidSession(snap.Session))
	assert.Equal(t, int64(0), snap.Segments[0].Seq)
}

func TestWindowAndBounds(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := New(Config{Segments: 3, StreamBytes: 1000, MaxBytes: 1500, Registerer: reg})
	for i := range int64(5) {
		b.Open("a", i*1000, []byte("ii"))
		b.Part("a", i*1000, [][]byte{fakeMoof(100, 1)}, time.Second, true)
		b.Close("a", i*1000, 1000)
	}
	snap, _ := b.Snapshot("a")
	require.Len(t, snap.Segments, 3, "the window keeps Segments segments")
	assert.Equal(t, int64(2000), snap.Segments[0].Start)
	assert.Equal(t, int64(2), snap.Segments[0].Seq)
	assert.Equal(t, float64(3*102), value(b.m.bytes))

	// One stream over its bound: closed segments' bytes go first, oldest
	// first; then the newest part is not held.
	b.Open("a", 5000, []byte("ii"))
	b.Part("a", 5000, [][]byte{fakeMoof(850, 2)}, time.Second, true)
	snap, _ = b.Snapshot("a")
	assert.False(t, snap.Segments[0].Parts[0].Held, "the oldest closed segment's bytes went")
	assert.True(t, snap.Segments[1].Parts[0].Held)
	b.Part("a", 5000, [][]byte{fakeMoof(900, 3)}, time.Second, false)
	snap, _ = b.Snapshot("a")
	last := snap.Segments[len(snap.Segments)-1]
	assert.True(t, last.Parts[0].Held)
	assert.False(t, last.Parts[1].Held, "a part beyond the stream's bound is not held")
	assert.Equal(t, float64(1), value(b.m.unheld))
	_, ok := b.Media("a", 4000)
	assert.False(t, ok)

	// The node bound holds across streams.
	b.Open("b", 0, nil)
	b.Part("b", 0, [][]byte{fakeMoof(900, 4)}, time.Second, true)
	assert.LessOrEqual(t, value(b.m.bytes), float64(1500))
	assert.Equal(t, float64(2), value(b.m.streams))
}

func TestValidSession(t *testing.T) {
	assert.True(t, ValidSession("0123456789abcdef"))
	for _, s := range []string{"", "0123456789abcde", "0123456789abcdefa", "0123456789ABCDEF", "0123456789abcdeg", "../../../../etc/"} {
		assert.False(t, ValidSession(s), s)
	}
}
