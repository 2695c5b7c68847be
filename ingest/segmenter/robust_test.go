package segmenter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/ingest"
	"github.com/vigilcloud/vigil/ingest/rtsp"
	"github.com/vigilcloud/vigil/storage"
)

var h264Media = rtsp.Media{Type: "video", Codec: "H264", PayloadType: 96, ClockRate: 90000}

func TestAuthorisation(t *testing.T) {
	g := newRig(t, time.Second)
	ctx := context.Background()
	r := g.rec
	if err := r.CheckPassword(ctx, "br1", "tok1"); err != nil {
		t.Errorf("right password: %v", err)
	}
	for _, c := range [][2]string{{"br1", "tok2"}, {"br1", "nope"}, {"br2", "tok1"}, {"", ""}} {
		if err := r.CheckPassword(ctx, c[0], c[1]); !errors.Is(err, rtsp.ErrUnauthorized) {
			t.Errorf("CheckPassword(%q, %q) = %v, want ErrUnauthorized", c[0], c[1], err)
		}
	}
	if ha1, err := r.DigestHA1(ctx, "br1", accounts.DigestRealm); err != nil || ha1 == "" {
		t.Errorf("DigestHA1: %q %v", ha1, err)
	}
	if _, err := r.DigestHA1(ctx, "br9", accounts.DigestRealm); !errors.Is(err, rtsp.ErrUnauthorized) {
		t.Errorf("unknown bridge digest: %v", err)
	}
	audio := rtsp.Media{Type: "audio", Codec: "PCMU", ClockRate: 8000}
	for _, c := range []struct {
		user, stream string
		medias       []rtsp.Media
		want         error
	}{
		{"br1", "nope", []rtsp.Media{h264Media}, rtsp.ErrNotFound},
		{"br1", "../x", []rtsp.Media{h264Media}, rtsp.ErrNotFound},
		{"br1", "cam2-main", []rtsp.Media{h264Media}, rtsp.ErrForbidden},
		{"br1", "cam1-main", []rtsp.Media{audio}, rtsp.ErrUnsupported},
		{"br1", "cam1-main", []rtsp.Media{{Type: "video", Codec: "VP8", ClockRate: 90000}}, rtsp.ErrUnsupported},
	} {
		if _, err := r.Announce(ctx, c.user, c.stream, c.medias); !errors.Is(err, c.want) {
			t.Errorf("Announce(%s, %s): %v, want %v", c.user, c.stream, err, c.want)
		}
	}
	// PCMU beside H.264 is ignored, not refused; a second publisher is busy.
	s1, err := r.Announce(ctx, "br1", "cam1-main", []rtsp.Media{h264Media, audio})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Announce(ctx, "br1", "cam1-main", []rtsp.Media{h264Media}); !errors.Is(err, rtsp.ErrBusy) {
		t.Errorf("second publisher: %v, want ErrBusy", err)
	}
	s1.Close(nil)
	s2, err := r.Announce(ctx, "br1", "cam1-main", []rtsp.Media{h264Media})
	if err != nil {
		t.Fatalf("after the first session closed: %v", err)
	}
	s2.Close(errors.New("disconnect"))
	// A deleted stream is not found.
	st := g.reg.streams["cam1-main"]
	now := time.Now()
	st.DeletedAt = &now
	g.reg.streams["cam1-main"] = st
	if _, err := r.Announce(ctx, "br1", "cam1-main", []rtsp.Media{h264Media}); !errors.Is(err, rtsp.ErrNotFound) {
		t.Errorf("deleted stream: %v", err)
	}
}

func TestMalformedNALEndsSession(t *testing.T) {
	g := newRig(t, time.Second)
	sink, err := g.rec.Announce(context.Background(), "br1", "cam1-main", []rtsp.Media{h264Media})
	if err != nil {
		t.Fatal(err)
	}
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: 1, Timestamp: 1, Marker: true}, Payload: []byte{0xe5, 1, 2, 3}}
	if err := sink.WriteRTP(0, pkt, time.Now()); err == nil {
		t.Fatal("a NAL unit with the forbidden bit was accepted")
	}
	pkt.SequenceNumber++
	if err := sink.WriteRTP(0, pkt, time.Now()); err == nil {
		t.Fatal("the session went on after an error")
	}
	sink.Close(err)
	if _, err := g.rec.Announce(context.Background(), "br1", "cam1-main", []rtsp.Media{h264Media}); err != nil {
		t.Fatalf("stream still reserved after the failed session: %v", err)
	}
}

// TestCrashRecovery: a process dies mid-segment (torn last fragment); the
// next one reads the spooled fMP4 and stores it up to its last complete
// fragment, with the duration the dead session had recorded. A spool file
// of the format before the headroom (version 1, with a journal) is
// recovered too.
func TestCrashRecovery(t *testing.T) {
	src := makeSource(t, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25")
	for _, version := range []int{0, 1} {
		t.Run(fmt.Sprintf("version%d", version), func(t *testing.T) {
			g := newRig(t, time.Minute)
			t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
			publish(t, g, "cam1-main", src, t0, src.packets()) // never closed: the "crash"
			paths, _ := filepath.Glob(filepath.Join(g.rec.cfg.SpoolDir, "cam1-main", "*.mp4"))
			if len(paths) != 1 {
				t.Fatalf("spool: %v", paths)
			}
			g.rec.mu.Lock()
			sp := g.rec.live["cam1-main"].seg.sp
			g.rec.mu.Unlock()
			wantMS, wantSize := sp.durationMS, sp.size
			if wantMS < 2000 {
				t.Fatalf("the session recorded %d ms", wantMS)
			}
			if version == 1 {
				toVersion1(t, paths[0], wantSize, wantMS)
			}
			f, err := os.OpenFile(paths[0], os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte("\x00\x00\x10\x00moof torn")) // a fragment cut short
			f.Close()

			rec2, err := New(Config{SpoolDir: g.rec.cfg.SpoolDir, Logger: testLogger(t)}, g.reg, g.ing, g.idx)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { rec2.Run(ctx); close(done) }()
			deadline := time.Now().Add(20 * time.Second)
			var segs []index.Segment
			for len(segs) == 0 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
				segs = g.segments(t, "cam1-main")
			}
			cancel()
			<-done
			if len(segs) != 1 || segs[0].DurationMS != wantMS || segs[0].Size != wantSize || segs[0].Start < t0.UnixMilli()-100 ||
				segs[0].SHA256 == "" || segs[0].Width != 320 || segs[0].Height != 240 {
				t.Fatalf("recovered %+v, want one 320x240 segment of %d ms, %d bytes", segs, wantMS, wantSize)
			}
			probe(t, g.segmentFile(t, "cam1-main", segs[0]))
			if left, _ := filepath.Glob(filepath.Join(g.rec.cfg.SpoolDir, "cam1-main", "*")); len(left) != 0 {
				t.Errorf("spool after recovery: %v", left)
			}
		})
	}
}

// toVersion1 rewrites a spooled segment in the format before the headroom,
// with its journal.
func toVersion1(t *testing.T, path string, size, durationMS int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b[storage.SpoolHeadroom:], 0o600); err != nil {
		t.Fatal(err)
	}
	j := fmt.Sprintf("vigil-spool 1 320 240\n%d %d\n", size, durationMS)
	if err := os.WriteFile(path+journalSuffix, []byte(j), 0o600); err != nil {
		t.Fatal(err)
	}
}

// flakyStorer fails the first n stores (storage down), then stores.
type flakyStorer struct {
	Storer
	mu    sync.Mutex
	fails int
	calls int
}

func (f *flakyStorer) Store(ctx context.Context, st accounts.Stream, seg index.Segment, body io.Reader, opts ...ingest.StoreOption) (index.Segment, bool, error) {
	f.mu.Lock()
	f.calls++
	fail := f.calls <= f.fails
	f.mu.Unlock()
	if fail {
		return index.Segment{}, false, errors.New("storage down")
	}
	return f.Storer.Store(ctx, st, seg, body, opts...)
}

func TestStoreRetriedWhileStorageIsDown(t *testing.T) {
	src := makeSource(t, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25")
	g := newRig(t, time.Second)
	fl := &flakyStorer{Storer: g.ing, fails: 5}
	g.rec.store = fl
	publish(t, g, "cam1-main", src, time.Now().Add(-time.Minute), src.packets()).Close(nil)
	g.rec.uploads.Wait()
	segs := g.segments(t, "cam1-main")
	if len(segs) < 2 {
		t.Fatalf("%d segments stored after the outage", len(segs))
	}
	checkContiguous(t, segs)
	if value(g.rec.m.retries) < 5 {
		t.Errorf("retries %v", value(g.rec.m.retries))
	}
}

// flakyIndex fails the first n Adds (the index down after the object was
// stored).
type flakyIndex struct {
	ingest.Index
	mu    sync.Mutex
	fails int
}

func (f *flakyIndex) Add(ctx context.Context, ref storage.StreamRef, seg index.Segment) (index.Segment, bool, error) {
	f.mu.Lock()
	fail := f.fails > 0
	f.fails--
	f.mu.Unlock()
	if fail {
		return index.Segment{}, false, errors.New("index down")
	}
	return f.Index.Add(ctx, ref, seg)
}

// TestStoredButNotIndexedRetried: the fs backend adopted the spool file as
// the object, then indexing failed. The retry must neither write into
// that file (it is the object now) nor store a second copy: it finds the
// object, checks its SHA-256 and indexes it.
func TestStoredButNotIndexedRetried(t *testing.T) {
	src := makeSource(t, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25")
	g := newRig(t, time.Minute)
	g.rec.store = ingest.New(ingest.Config{}, g.store, &flakyIndex{Index: g.idx, fails: 1}, g.reg)
	publish(t, g, "cam1-main", src, time.Now().Add(-time.Minute), src.packets()).Close(nil)
	g.rec.uploads.Wait()
	segs := g.segments(t, "cam1-main")
	if len(segs) != 1 {
		t.Fatalf("%d segments indexed, want 1", len(segs))
	}
	path := g.segmentFile(t, "cam1-main", segs[0])
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != segs[0].SHA256 || int64(len(b)) != segs[0].Size {
		t.Fatalf("indexed %d bytes sha256 %s; the object has %d bytes sha256 %x", segs[0].Size, segs[0].SHA256, len(b), sum)
	}
	probe(t, path)
	if value(g.rec.m.retries) < 1 {
		t.Errorf("retries %v", value(g.rec.m.retries))
	}
	if left, _ := filepath.Glob(filepath.Join(g.rec.cfg.SpoolDir, "cam1-main", "*")); len(left) != 0 {
		t.Errorf("spool after the retry: %v", left)
	}
}

// nopIndex and discardStorer keep the fuzz target in memory.
type nopIndex struct{}

func (nopIndex) Segments(context.Context, storage.StreamRef, int64, int64) ([]index.Segment, error) {
	return nil, nil
}

type discardStorer struct{}

func (discardStorer) Store(_ context.Context, _ accounts.Stream, seg index.Segment, body io.Reader, _ ...ingest.StoreOption) (index.Segment, bool, error) {
	_, err := io.Copy(io.Discard, body)
	return seg, true, err
}

// Deleting a camera ends its live sessions: the next packet after the
// registry says so is refused, and a new ANNOUNCE is not found.
func TestDeletedStreamEndsSession(t *testing.T) {
	g := newRig(t, time.Second)
	ctx := context.Background()
	sink, err := g.rec.Announce(ctx, "br1", "cam1-main", []rtsp.Media{h264Media})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close(nil)
	if err := sink.WriteRTP(99, &rtp.Packet{}, time.Now()); err != nil {
		t.Fatalf("live stream: %v", err)
	}
	g.reg.mu.Lock()
	st := g.reg.streams["cam1-main"]
	now := time.Now()
	st.DeletedAt = &now
	g.reg.streams["cam1-main"] = st
	g.reg.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err = sink.WriteRTP(99, &rtp.Packet{}, time.Now())
		if err != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err == nil || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("session of a deleted stream goes on: %v", err)
	}
	if _, err := g.rec.Announce(ctx, "br1", "cam1-main", []rtsp.Media{h264Media}); !errors.Is(err, rtsp.ErrNotFound) {
		t.Errorf("announce after deletion: %v", err)
	}
}
