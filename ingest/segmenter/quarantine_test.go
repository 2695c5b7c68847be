package segmenter

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/media/fmp4"
	"github.com/vigilcloud/vigil/storage"
)

// TestUnindexableSpoolQuarantined: a spooled segment that no retry can
// ever store (here one of 22,224,262 ms, as an RTP timestamp jump made
// before the fix) is moved to the quarantine directory with a metric, not
// retried forever; the backlog empties and nothing reaches storage.
func TestUnindexableSpoolQuarantined(t *testing.T) {
	g := newRig(t, time.Minute)
	start := time.Now().Add(-time.Hour).UnixMilli()
	spool := filepath.Join(t.TempDir(), "spool") // not the running rig's: its recovery must not race the writing
	path := filepath.Join(spool, "cam1-main", strconv.FormatInt(start, 10)+".mp4")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	tr := fmp4.Track{ID: 1, Codec: fmp4.H264, TimeScale: 90000, Width: 320, Height: 240,
		SPS: []byte{0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x47, 0xfe, 0xc8}, PPS: []byte{0x68, 0xce, 0x3c, 0x80}}
	sp, err := createSpool(path, []fmp4.Track{tr})
	if err != nil {
		t.Fatal(err)
	}
	var samples []fmp4.Sample
	for j := range 50 {
		d := uint32(3600)
		if j == 24 {
			d = 2_000_000_000 // the jump, as one picture's duration
		}
		samples = append(samples, fmp4.Sample{Duration: d, Keyframe: j == 0, Data: []byte{0, 0, 0, 2, 0x41, byte(j)}})
	}
	if err := sp.writeFragment(fmp4.Fragment{SequenceNumber: 1, Tracks: []fmp4.TrackFragment{{TrackID: 1, Samples: samples}}}, 22_224_262); err != nil {
		t.Fatal(err)
	}
	sp.f.Close()

	// A restart finds the file and tries to store it.
	rec2, err := New(Config{SpoolDir: spool, Logger: testLogger(t), RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond},
		g.reg, g.ing, g.idx)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rec2.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	quarantined := filepath.Join(spool, quarantineDir, "cam1-main", strconv.FormatInt(start, 10)+".invalid.mp4")
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := os.Stat(quarantined)
		if err == nil && value(rec2.m.backlog) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: backlog %v, retries %v, quarantined file: %v", value(rec2.m.backlog), value(rec2.m.retries), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v := value(rec2.m.quarantined.WithLabelValues("invalid")); v != 1 {
		t.Errorf("vigil_recorder_segments_quarantined_total{reason=invalid} %v, want 1", v)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("spool file still there: %v", err)
	}
	st := g.reg.streams["cam1-main"]
	ref := storage.StreamRef{Account: st.Account, Camera: st.Camera, Stream: st.ID}
	if _, err := g.store.Stat(context.Background(), ref.SegmentKey(start)); err == nil {
		t.Error("the unindexable segment was stored")
	}
	if segs := g.segments(t, "cam1-main"); len(segs) != 0 {
		t.Errorf("indexed %+v", segs)
	}
	// A quarantined file is never picked up again.
	if err := rec2.recoverSpool(ctx); err != nil {
		t.Fatal(err)
	}
	if v := value(rec2.m.backlog); v != 0 {
		t.Errorf("backlog %v after another recovery, want 0", v)
	}
}
