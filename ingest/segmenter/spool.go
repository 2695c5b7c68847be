package segmenter

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/ingest"
	"github.com/vigilcloud/vigil/media"
	"github.com/vigilcloud/vigil/media/fmp4"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/storage"
)

// A spooled segment is DIR/<stream>/<start ms>.mp4 with a journal
// <start ms>.mp4.frags beside it: a header line "vigil-spool 1 W H", then
// one line "<size> <duration ms>" after each complete fragment. After a
// crash the segment is cut back to the last journalled size and uploaded
// with that duration, so what a reader finds is always a complete
// fragment sequence.
//
// Nothing here calls fsync: a fragment is one write(2) of the whole
// fragment followed by its journal line, so a killed process (SIGKILL, a
// crash) leaves both in the page cache and the next start uploads them.
// Power-loss durability begins when storage acknowledges the segment
// (the fs backend syncs it before publishing it); a power cut loses the
// open segment and any not yet stored, as a camera's buffer would.
const journalSuffix = ".frags"

type spoolFile struct {
	path    string
	f       *os.File
	journal *os.File
	w       *bufio.Writer
	hash    hash.Hash // SHA-256 of what was written to f, so that storing need not read it back
	size    int64
	frags   int
	line    []byte // the journal line, reused
}

// hashingWriter writes to w and hashes what w took.
type hashingWriter struct {
	w io.Writer
	h hash.Hash
}

func (hw hashingWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	return n, err
}

func createSpool(path string, tracks []fmp4.Track, width, height int) (*spoolFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("segmenter: spool dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("segmenter: spool: %w", err)
	}
	j, err := os.OpenFile(path+journalSuffix, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("segmenter: spool journal: %w", err)
	}
	h := sha256.New()
	s := &spoolFile{path: path, f: f, journal: j, hash: h, w: bufio.NewWriterSize(hashingWriter{f, h}, 64<<10)}
	if _, err := fmt.Fprintf(j, "vigil-spool 1 %d %d\n", width, height); err != nil {
		s.abort()
		return nil, fmt.Errorf("segmenter: spool journal: %w", err)
	}
	n, err := fmp4.WriteInit(s.w, tracks, fmp4.InitOptions{})
	if err != nil {
		s.abort()
		return nil, fmt.Errorf("segmenter: write init: %w", err)
	}
	s.size = n
	return s, nil
}

// writeFragment appends one fragment and journals it once it is written
// through to the file.
func (s *spoolFile) writeFragment(frag fmp4.Fragment, durationMS int64) error {
	n, err := fmp4.WriteFragment(s.w, frag)
	if err != nil {
		return fmt.Errorf("segmenter: write fragment: %w", err)
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("segmenter: spool: %w", err)
	}
	s.size += n
	s.frags++
	s.line = strconv.AppendInt(s.line[:0], s.size, 10)
	s.line = append(s.line, ' ')
	s.line = strconv.AppendInt(s.line, durationMS, 10)
	s.line = append(s.line, '\n')
	if _, err := s.journal.Write(s.line); err != nil {
		return fmt.Errorf("segmenter: spool journal: %w", err)
	}
	return nil
}

func (s *spoolFile) close() error {
	return errors.Join(s.w.Flush(), s.f.Close(), s.journal.Close())
}

// sum is the SHA-256 of the spooled bytes (after close).
func (s *spoolFile) sum() string { return hex.EncodeToString(s.hash.Sum(nil)) }

func (s *spoolFile) abort() {
	s.f.Close()
	s.journal.Close()
	removeSpool(s.path)
}

func removeSpool(path string) {
	os.Remove(path)
	os.Remove(path + journalSuffix)
}

// uploadJob is a closed segment waiting to be stored.
type uploadJob struct {
	path   string
	stream string
	seg    index.Segment // Start, DurationMS, Width, Height
	// sha256 and size describe the file as this process spooled it; empty
	// for a file of an earlier run, which is validated and hashed as any
	// upload.
	sha256 string
	size   int64
	done   func() // called once the job ended either way
}

// readJournal returns the spooled segment's last complete size and
// duration and the picture size.
func readJournal(path string) (size, durationMS int64, width, height int, err error) {
	b, err := os.ReadFile(path + journalSuffix)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	lines := bytes.Split(b, []byte("\n"))
	lines = lines[:len(lines)-1] // a line without its newline is incomplete
	if len(lines) == 0 {
		return 0, 0, 0, 0, errors.New("segmenter: spool journal without header")
	}
	h := strings.Fields(string(lines[0]))
	if len(h) != 4 || h[0] != "vigil-spool" || h[1] != "1" {
		return 0, 0, 0, 0, fmt.Errorf("segmenter: spool journal header %q", lines[0])
	}
	width, _ = strconv.Atoi(h[2])
	height, _ = strconv.Atoi(h[3])
	if len(lines) == 1 {
		return 0, 0, width, height, nil
	}
	f := strings.Fields(string(lines[len(lines)-1]))
	if len(f) != 2 {
		return 0, 0, 0, 0, fmt.Errorf("segmenter: spool journal line %q", lines[len(lines)-1])
	}
	size, err1 := strconv.ParseInt(f[0], 10, 64)
	durationMS, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || size <= 0 || durationMS < 0 {
		return 0, 0, 0, 0, fmt.Errorf("segmenter: spool journal line %q", lines[len(lines)-1])
	}
	return size, durationMS, width, height, nil
}

// recoverSpool uploads the segments a previous process left in the spool,
// cut back to their last complete fragment.
func (r *Recorder) recoverSpool(ctx context.Context) error {
	paths, err := filepath.Glob(filepath.Join(r.cfg.SpoolDir, "*", "*.mp4"))
	if err != nil {
		return err
	}
	for _, p := range paths {
		if r.owned(p) {
			continue
		}
		stream := filepath.Base(filepath.Dir(p))
		start, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(p), ".mp4"), 10, 64)
		if err != nil || !storage.ValidID(stream) {
			r.log.WarnContext(ctx, "segmenter: foreign file in spool left alone", "path", p)
			continue
		}
		size, dur, w, h, err := readJournal(p)
		if err == nil && (size == 0 || dur <= 0) {
			err = errors.New("no complete fragment")
		}
		if err == nil {
			err = os.Truncate(p, size)
		}
		if err != nil {
			r.log.WarnContext(ctx, "segmenter: spooled segment unusable, removed", "path", p, "err", err)
			removeSpool(p)
			continue
		}
		r.log.InfoContext(ctx, "segmenter: uploading spooled segment from an earlier run", "stream", stream, "start", start, "duration_ms", dur, "bytes", size)
		r.enqueue(uploadJob{path: p, stream: stream, seg: index.Segment{Start: start, DurationMS: dur, Width: w, Height: h}})
	}
	return nil
}

// owned reports whether a session of this process still owns path.
func (r *Recorder) owned(path string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.spooled[path]
}

func (r *Recorder) setOwned(path string, own bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if own {
		r.spooled[path] = true
	} else {
		delete(r.spooled, path)
	}
}

// enqueue stores job in the background, retrying until it is stored, the
// stream is gone, or the recorder stops (then it stays spooled).
func (r *Recorder) enqueue(job uploadJob) {
	r.setOwned(job.path, true)
	r.m.backlog.Inc()
	r.uploads.Add(1)
	r.mu.Lock()
	ctx := r.ctx
	r.mu.Unlock()
	go func() {
		defer r.uploads.Done()
		defer r.m.backlog.Dec()
		defer r.setOwned(job.path, false)
		if job.done != nil {
			defer job.done()
		}
		r.upload(ctx, job)
	}()
}

func (r *Recorder) upload(ctx context.Context, job uploadJob) {
	log := r.log.With("stream", job.stream, "start", job.seg.Start, "path", job.path)
	wait := r.cfg.RetryMin
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			r.m.retries.Inc()
			t := time.NewTimer(wait/2 + rand.N(wait/2+1))
			select {
			case <-ctx.Done():
				t.Stop()
				log.WarnContext(ctx, "segmenter: segment not stored before shutdown; it stays spooled for the next start")
				return
			case <-t.C:
			}
			wait = min(2*wait, r.cfg.RetryMax)
		}
		st, err := r.reg.Stream(ctx, job.stream)
		switch {
		case errors.Is(err, meter.ErrNotFound) || err == nil && st.DeletedAt != nil:
			// The camera was deleted: its video must go, not be stored.
			log.WarnContext(ctx, "segmenter: stream deleted; recorded segment discarded")
			r.m.segments.WithLabelValues("dropped_deleted_stream").Inc()
			removeSpool(job.path)
			return
		case err != nil:
			log.WarnContext(ctx, "segmenter: registry unavailable; retrying", "err", err)
			continue
		}
		res, err := r.storeFile(ctx, st, job)
		var be *ingest.BodyError
		switch {
		case err == nil:
			r.m.segments.WithLabelValues(res).Inc()
			log.DebugContext(ctx, "segmenter: segment stored", "result", res, "duration_ms", job.seg.DurationMS)
			removeSpool(job.path)
			return
		case errors.Is(err, ingest.ErrConflict):
			log.ErrorContext(ctx, "segmenter: another segment is stored at this start; kept in the spool as .conflict", "err", err)
			r.m.segments.WithLabelValues("conflict").Inc()
			r.park(job.path, ".conflict")
			return
		case errors.As(err, &be) && ctx.Err() == nil && !errors.Is(err, fs.ErrNotExist):
			log.ErrorContext(ctx, "segmenter: recorded segment refused as malformed; kept in the spool as .rejected", "err", err)
			r.m.segments.WithLabelValues("rejected").Inc()
			r.park(job.path, ".rejected")
			return
		case ctx.Err() != nil:
			log.WarnContext(ctx, "segmenter: segment not stored before shutdown; it stays spooled for the next start")
			return
		default:
			log.WarnContext(ctx, "segmenter: store failed; retrying", "attempt", attempt+1, "err", err)
		}
	}
}

func (r *Recorder) storeFile(ctx context.Context, st meter.Stream, job uploadJob) (string, error) {
	f, err := os.Open(job.path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	seg := job.seg
	seg.Size, seg.ContentType = fi.Size(), media.ContentTypeMP4
	var opts []ingest.StoreOption
	if job.sha256 != "" && job.size == fi.Size() {
		// This process wrote and hashed the file: no second validation or
		// hash, and the bare *os.File lets storage copy it in the kernel.
		seg.SHA256 = job.sha256
		opts = append(opts, ingest.SelfRecorded())
	}
	_, created, err := r.store.Store(ctx, st, seg, f, opts...)
	if err != nil {
		return "", err
	}
	if created {
		return "stored", nil
	}
	return "duplicate", nil
}

// park moves a spooled segment aside (kept for an operator, never retried).
func (r *Recorder) park(path, suffix string) {
	if err := os.Rename(path, path+suffix); err != nil {
		r.log.Error("segmenter: cannot park spooled segment", "path", path, "err", err)
	}
	os.Rename(path+journalSuffix, path+suffix+journalSuffix)
}
