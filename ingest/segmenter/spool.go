package segmenter

import (
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
	"syscall"
	"time"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/ingest"
	"github.com/vigilcloud/vigil/media"
	"github.com/vigilcloud/vigil/media/fmp4"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/storage"
	"golang.org/x/sys/unix"
)

// A spooled segment is DIR/<stream>/<start ms>.mp4: storage.SpoolHeadroom
// free bytes, then the fMP4 (init and fragments), so that a file-backed
// store can adopt the file as the object instead of copying it. Beside it
// is a journal <start ms>.mp4.frags: a header line "vigil-spool 2 W H",
// then one line "<size> <duration ms>" after each complete fragment, size
// counting the fMP4's bytes. After a crash the segment is cut back to the
// last journalled size and uploaded with that duration, so what a reader
// finds is always a complete fragment sequence. Version 1 files (no
// headroom) are still recovered.
//
// Nothing here calls fsync: a fragment is one writev(2) of the whole
// fragment followed by its journal line, so a killed process (SIGKILL, a
// crash) leaves both in the page cache and the next start uploads them.
// Power-loss durability begins when storage acknowledges the segment
// (the fs backend syncs it before publishing it); a power cut loses the
// open segment and any not yet stored, as a camera's buffer would.
// errNoFragment: a segment ended before its first fragment was complete.
var errNoFragment = errors.New("segmenter: no complete fragment")

const (
	journalSuffix  = ".frags"
	journalVersion = 2
)

type spoolFile struct {
	path    string
	f       *os.File // open for reading and writing: storing may adopt it
	journal *os.File
	hash    hash.Hash // SHA-256 of the fMP4 written, so that storing need not read it back
	broken  bool      // a write failed: hash no longer matches the file
	size    int64     // fMP4 bytes written (complete fragments only)
	frags   int
	line    []byte   // the journal line, reused
	hdr     []byte   // fragment header, reused
	iov     [][]byte // one fragment's pieces, reused
}

func createSpool(path string, tracks []fmp4.Track, width, height int) (*spoolFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("segmenter: spool dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("segmenter: spool: %w", err)
	}
	j, err := os.OpenFile(path+journalSuffix, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("segmenter: spool journal: %w", err)
	}
	s := &spoolFile{path: path, f: f, journal: j, hash: sha256.New()}
	if _, err := fmt.Fprintf(j, "vigil-spool %d %d %d\n", journalVersion, width, height); err != nil {
		s.abort()
		return nil, fmt.Errorf("segmenter: spool journal: %w", err)
	}
	var init bytes.Buffer
	if _, err := fmp4.WriteInit(&init, tracks, fmp4.InitOptions{}); err != nil {
		s.abort()
		return nil, fmt.Errorf("segmenter: write init: %w", err)
	}
	// The headroom stays a hole until storage writes its header there.
	if _, err := f.Seek(storage.SpoolHeadroom, io.SeekStart); err != nil {
		s.abort()
		return nil, fmt.Errorf("segmenter: spool: %w", err)
	}
	if err := s.write([][]byte{init.Bytes()}); err != nil {
		s.abort()
		return nil, err
	}
	return s, nil
}

// write appends bufs to the file (one writev where it can) and hashes them.
func (s *spoolFile) write(bufs [][]byte) error {
	n, err := writev(s.f, bufs)
	if err != nil {
		s.broken = true
		return fmt.Errorf("segmenter: spool: %w", err)
	}
	for _, b := range bufs {
		s.hash.Write(b)
	}
	s.size += n
	return nil
}

// writeFragment appends one fragment and journals it once it is written
// through to the file.
func (s *spoolFile) writeFragment(frag fmp4.Fragment, durationMS int64) error {
	hdr, err := fmp4.AppendFragmentHeader(s.hdr[:0], frag)
	if err != nil {
		return fmt.Errorf("segmenter: write fragment: %w", err)
	}
	s.hdr = hdr
	iov := append(s.iov[:0], hdr)
	for _, tf := range frag.Tracks {
		for _, smp := range tf.Samples {
			iov = append(iov, smp.Data)
		}
	}
	err = s.write(iov)
	clear(iov) // the samples go back to their pool
	s.iov = iov[:0]
	if err != nil {
		return err
	}
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

// writev writes all of bufs to f, with as few writev(2) calls as it can.
func writev(f *os.File, bufs [][]byte) (int64, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var total int64
	for len(bufs) > 0 {
		// Skip empty pieces: writev would return 0 for them alone.
		if len(bufs[0]) == 0 {
			bufs = bufs[1:]
			continue
		}
		iov := bufs[:min(len(bufs), iovMax)]
		var n int
		var werr error
		if err := rc.Write(func(fd uintptr) bool {
			n, werr = unix.Writev(int(fd), iov)
			return werr != unix.EAGAIN
		}); err != nil {
			return total, err
		}
		if werr == unix.EINTR {
			continue
		}
		if werr != nil {
			return total, werr
		}
		if n == 0 {
			return total, io.ErrShortWrite
		}
		total += int64(n)
		// Drop what was written, keeping a partly written piece's rest.
		for n > 0 {
			if n >= len(bufs[0]) {
				n -= len(bufs[0])
				bufs = bufs[1:]
				continue
			}
			rest := bufs[0][n:]
			bufs = append([][]byte{rest}, bufs[1:]...)
			n = 0
		}
	}
	return total, nil
}

// iovMax is Linux's IOV_MAX.
const iovMax = 1024

// finish closes the journal; the file stays open for storing.
func (s *spoolFile) finish() error {
	return s.journal.Close()
}

// sum is the SHA-256 of the spooled fMP4, or "" when a failed write left
// the file and the hash apart.
func (s *spoolFile) sum() string {
	if s.broken {
		return ""
	}
	return hex.EncodeToString(s.hash.Sum(nil))
}

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
	f      *os.File // the spool file, open for reading and writing; nil: open path
	stream string
	seg    index.Segment // Start, DurationMS, Width, Height
	// offset and size place the fMP4 in the file.
	offset, size int64
	// sha256 is the fMP4's hash as this process spooled it; empty for a file
	// of an earlier run, which is validated and hashed as any upload.
	sha256 string
	done   func() // called once the job ended either way
}

// journal is what a spool journal says.
type journal struct {
	offset     int64 // where the fMP4 starts in the spool file
	size       int64 // its bytes up to the last complete fragment
	durationMS int64
	width      int
	height     int
}

// readJournal reads the journal of the segment spooled at path.
func readJournal(path string) (journal, error) {
	b, err := os.ReadFile(path + journalSuffix)
	if err != nil {
		return journal{}, err
	}
	lines := bytes.Split(b, []byte("\n"))
	lines = lines[:len(lines)-1] // a line without its newline is incomplete
	if len(lines) == 0 {
		return journal{}, errors.New("segmenter: spool journal without header")
	}
	var j journal
	h := strings.Fields(string(lines[0]))
	switch {
	case len(h) != 4 || h[0] != "vigil-spool":
		return journal{}, fmt.Errorf("segmenter: spool journal header %q", lines[0])
	case h[1] == "1": // before the headroom
	case h[1] == strconv.Itoa(journalVersion):
		j.offset = storage.SpoolHeadroom
	default:
		return journal{}, fmt.Errorf("segmenter: spool journal version %q", h[1])
	}
	j.width, _ = strconv.Atoi(h[2])
	j.height, _ = strconv.Atoi(h[3])
	if len(lines) == 1 {
		return j, nil
	}
	f := strings.Fields(string(lines[len(lines)-1]))
	if len(f) != 2 {
		return journal{}, fmt.Errorf("segmenter: spool journal line %q", lines[len(lines)-1])
	}
	size, err1 := strconv.ParseInt(f[0], 10, 64)
	durationMS, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || size <= 0 || durationMS < 0 {
		return journal{}, fmt.Errorf("segmenter: spool journal line %q", lines[len(lines)-1])
	}
	j.size, j.durationMS = size, durationMS
	return j, nil
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
		j, err := readJournal(p)
		if err == nil && (j.size == 0 || j.durationMS <= 0) {
			err = errNoFragment
		}
		if err == nil {
			err = cutSpool(p, j)
		}
		if err != nil {
			r.log.WarnContext(ctx, "segmenter: spooled segment unusable, removed", "path", p, "err", err)
			removeSpool(p)
			continue
		}
		r.log.InfoContext(ctx, "segmenter: uploading spooled segment from an earlier run", "stream", stream, "start", start, "duration_ms", j.durationMS, "bytes", j.size)
		r.enqueue(uploadJob{path: p, stream: stream, offset: j.offset, size: j.size,
			seg: index.Segment{Start: start, DurationMS: j.durationMS, Width: j.width, Height: j.height}})
	}
	return nil
}

// cutSpool truncates a spool file to its journalled fragments. A file that
// has another name already became an object and is left as it is.
func cutSpool(path string, j journal) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	want := j.offset + j.size
	switch sys, ok := st.Sys().(*syscall.Stat_t); {
	case st.Size() < want:
		return fmt.Errorf("spool file of %d bytes, journal says %d", st.Size(), want)
	case st.Size() == want || ok && sys.Nlink > 1:
		return nil
	}
	return os.Truncate(path, want)
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
		if job.f != nil {
			defer job.f.Close()
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
	f := job.f
	if f == nil {
		var err error
		if f, err = os.OpenFile(job.path, os.O_RDWR, 0); err != nil {
			return "", err
		}
		defer f.Close()
	}
	seg := job.seg
	seg.Size, seg.ContentType = job.size, media.ContentTypeMP4
	var body io.Reader = io.NewSectionReader(f, job.offset, job.size)
	var opts []ingest.StoreOption
	if job.sha256 != "" && job.offset == storage.SpoolHeadroom {
		// This process wrote and hashed the file: no second validation or
		// hash, and a file-backed store may adopt the file as it is.
		seg.SHA256 = job.sha256
		body = storage.NewSpooled(f, job.size)
		opts = append(opts, ingest.SelfRecorded())
	}
	_, created, err := r.store.Store(ctx, st, seg, body, opts...)
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
