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
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vigilcloud/vigil/accounts"
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
// store can adopt the file as the object instead of copying it.
//
// The fMP4 is its own journal: each fragment is one writev(2) of a moof
// and its mdat, both sized. After a crash the file is read from the
// headroom on; the init and every complete fragment are kept and anything
// after them cut off, and the segment's duration is where the video's last
// complete fragment ends. Files of earlier versions keep a journal beside
// them (<start ms>.mp4.frags: "vigil-spool V W H", then "<size> <duration
// ms>" per fragment; version 1 has no headroom) and are recovered by it.
//
// Nothing here calls fsync: a killed process (SIGKILL, a crash) leaves
// what it wrote in the page cache, and the next start uploads it.
// Power-loss durability begins when storage acknowledges the segment
// (the fs backend syncs it before publishing it); a power cut loses the
// open segment and any not yet stored, as a camera's buffer would.

// errNoFragment: a segment ended before its first fragment was complete.
var errNoFragment = errors.New("segmenter: no complete fragment")

// journalSuffix names the journal of a spool file from an earlier version.
const journalSuffix = ".frags"

type spoolFile struct {
	path       string
	f          *os.File  // open for reading and writing: storing may adopt it
	hash       hash.Hash // SHA-256 of the fMP4 written, so that storing need not read it back
	broken     bool      // a write failed: hash no longer matches the file
	size       int64     // fMP4 bytes written (complete fragments only)
	frags      int
	durationMS int64    // where the last complete fragment ends
	hdr        []byte   // fragment header, reused
	iov        [][]byte // one fragment's pieces, reused
	init       []byte   // the init section written
	// tap, if set, sees each fragment's pieces once written (the live
	// window copies them); they are reused after it returns.
	tap func(pieces [][]byte)
}

func createSpool(path string, tracks []fmp4.Track) (*spoolFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("segmenter: spool dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("segmenter: spool: %w", err)
	}
	s := &spoolFile{path: path, f: f, hash: sha256.New()}
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
	s.init = init.Bytes()
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

// writeFragment appends one fragment, which ends durationMS into the
// segment.
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
	if err == nil && s.tap != nil {
		s.tap(iov)
	}
	clear(iov) // the samples go back to their pool
	s.iov = iov[:0]
	if err != nil {
		return err
	}
	s.frags++
	s.durationMS = durationMS
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
	removeSpool(s.path)
}

// removeSpool removes a spool file and the journal an earlier version kept.
func removeSpool(path string) {
	os.Remove(path)
	os.Remove(path + journalSuffix)
}

// uploadJob is a closed segment waiting to be stored.
type uploadJob struct {
	path   string
	f      *os.File // the spool file, open for reading and writing; nil: open path
	stream string
	// registered is the RegisteredAt of the stream incarnation the segment
	// was recorded for; zero for a file of an earlier run.
	registered time.Time
	seg        index.Segment // Start, DurationMS, Width, Height
	// offset and size place the fMP4 in the file.
	offset, size int64
	// sha256 is the fMP4's hash as this process spooled it; empty for a file
	// of an earlier run, which is validated and hashed as any upload.
	sha256 string
	done   func() // called once the job ended either way
}

// spooled describes a spool file found at start: where its fMP4 lies
// and what it holds up to its last complete fragment.
type spooled struct {
	offset     int64 // where the fMP4 starts in the spool file
	size       int64 // its bytes up to the last complete fragment
	durationMS int64
	width      int
	height     int
}

// readSpool describes the segment spooled at path: from its journal when
// an earlier version left one, else by reading the fMP4 itself.
func readSpool(path string) (spooled, error) {
	b, err := os.ReadFile(path + journalSuffix)
	switch {
	case err == nil:
		return parseJournal(b)
	case !errors.Is(err, fs.ErrNotExist):
		return spooled{}, err
	}
	return scanSpool(path)
}

// scanSpool reads the fMP4 after the headroom up to its last complete
// fragment; the duration is where the video's last fragment ends.
func scanSpool(path string) (spooled, error) {
	f, err := os.Open(path)
	if err != nil {
		return spooled{}, err
	}
	defer f.Close()
	return scanFMP4(bufio.NewReaderSize(io.NewSectionReader(f, storage.SpoolHeadroom, math.MaxInt64-storage.SpoolHeadroom), 64<<10))
}

// scanFMP4 reads a spooled fMP4 up to its last complete fragment.
func scanFMP4(r io.Reader) (spooled, error) {
	rd := fmp4.NewReader(r)
	tracks, initSize, err := rd.ReadInit()
	if err != nil {
		return spooled{}, fmt.Errorf("segmenter: spool init: %w", err)
	}
	var video *fmp4.Track
	for i := range tracks {
		if c := tracks[i].Codec; (c == fmp4.H264 || c == fmp4.H265) && tracks[i].TimeScale > 0 {
			video = &tracks[i]
			break
		}
	}
	if video == nil {
		return spooled{}, errors.New("segmenter: spool without a video track")
	}
	sp := spooled{offset: storage.SpoolHeadroom, size: initSize, width: video.Width, height: video.Height}
	var start, end uint64
	first := true
	for {
		// A torn last fragment ends the scan: what came before stands.
		frag, err := rd.NextFragment()
		if err != nil {
			break
		}
		for _, tf := range frag.Tracks {
			if tf.TrackID != video.ID {
				continue
			}
			end = tf.BaseDecodeTime
			if first {
				// A segment that runs on from the one before starts
				// where it ended, not at zero.
				start, first = end, false
			}
			for _, smp := range tf.Samples {
				end += uint64(smp.Duration)
			}
		}
		sp.size = rd.Offset()
	}
	sp.durationMS = int64((end - start) * 1000 / uint64(video.TimeScale))
	if sp.size == initSize {
		sp.size = 0 // no fragment: nothing to store
	}
	return sp, nil
}

// parseJournal reads the journal of an earlier version's spool file.
func parseJournal(b []byte) (spooled, error) {
	lines := bytes.Split(b, []byte("\n"))
	lines = lines[:len(lines)-1] // a line without its newline is incomplete
	if len(lines) == 0 {
		return spooled{}, errors.New("segmenter: spool journal without header")
	}
	var sp spooled
	h := strings.Fields(string(lines[0]))
	switch {
	case len(h) != 4 || h[0] != "vigil-spool":
		return spooled{}, fmt.Errorf("segmenter: spool journal header %q", lines[0])
	case h[1] == "1": // before the headroom
	case h[1] == "2":
		sp.offset = storage.SpoolHeadroom
	default:
		return spooled{}, fmt.Errorf("segmenter: spool journal version %q", h[1])
	}
	sp.width, _ = strconv.Atoi(h[2])
	sp.height, _ = strconv.Atoi(h[3])
	if len(lines) == 1 {
		return sp, nil
	}
	f := strings.Fields(string(lines[len(lines)-1]))
	if len(f) != 2 {
		return spooled{}, fmt.Errorf("segmenter: spool journal line %q", lines[len(lines)-1])
	}
	size, err1 := strconv.ParseInt(f[0], 10, 64)
	durationMS, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || size <= 0 || durationMS < 0 {
		return spooled{}, fmt.Errorf("segmenter: spool journal line %q", lines[len(lines)-1])
	}
	sp.size, sp.durationMS = size, durationMS
	return sp, nil
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
		sp, err := readSpool(p)
		if err == nil && (sp.size == 0 || sp.durationMS <= 0) {
			err = errNoFragment
		}
		if err == nil {
			err = cutSpool(p, sp)
		}
		if err != nil {
			r.log.WarnContext(ctx, "segmenter: spooled segment unusable, removed", "path", p, "err", err)
			removeSpool(p)
			continue
		}
		r.log.InfoContext(ctx, "segmenter: uploading spooled segment from an earlier run", "stream", stream, "start", start, "duration_ms", sp.durationMS, "bytes", sp.size)
		r.enqueue(uploadJob{path: p, stream: stream, offset: sp.offset, size: sp.size,
			seg: index.Segment{Start: start, DurationMS: sp.durationMS, Width: sp.width, Height: sp.height}})
	}
	return nil
}

// cutSpool truncates a spool file to its complete fragments. A file that
// has another name already became an object and is left as it is.
func cutSpool(path string, j spooled) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	want := j.offset + j.size
	switch sys, ok := st.Sys().(*syscall.Stat_t); {
	case st.Size() < want:
		return fmt.Errorf("spool file of %d bytes, %d expected", st.Size(), want)
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
		st, err := accounts.AcceptsData(ctx, r.reg, job.stream)
		switch {
		case errors.Is(err, meter.ErrNotFound) || err == nil && !job.incarnationOf(st):
			// The camera was deleted (and maybe created again with the
			// same ids): its video must go, not be stored.
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
		case errors.Is(err, ingest.ErrStreamDeleted):
			log.WarnContext(ctx, "segmenter: stream deleted while storing; recorded segment discarded")
			r.m.segments.WithLabelValues("dropped_deleted_stream").Inc()
			removeSpool(job.path)
			return
		case err == nil:
			r.m.segments.WithLabelValues(res).Inc()
			log.DebugContext(ctx, "segmenter: segment stored", "result", res, "duration_ms", job.seg.DurationMS)
			removeSpool(job.path)
			r.cfg.Live.Stored(job.stream, job.seg.Start)
			return
		case errors.Is(err, ingest.ErrConflict):
			r.quarantine(ctx, job, "conflict", "another segment is stored at this start", err)
			return
		case errors.Is(err, ingest.ErrInvalidSegment):
			// Permanent: the index can never hold it (e.g. too long), so a
			// retry would loop forever.
			r.quarantine(ctx, job, "invalid", "recorded segment can never be indexed", err)
			return
		case errors.As(err, &be) && ctx.Err() == nil && !errors.Is(err, fs.ErrNotExist):
			r.quarantine(ctx, job, "rejected", "recorded segment refused as malformed", err)
			return
		case ctx.Err() != nil:
			log.WarnContext(ctx, "segmenter: segment not stored before shutdown; it stays spooled for the next start")
			return
		default:
			log.WarnContext(ctx, "segmenter: store failed; retrying", "attempt", attempt+1, "err", err)
		}
	}
}

// incarnationOf reports whether the job was recorded for st and not for an
// earlier stream of the same id, deleted since. A file of an earlier run
// does not know its incarnation; it was recorded after its stream was
// registered, so one that starts before st's registration is older.
func (j uploadJob) incarnationOf(st accounts.Stream) bool {
	if !j.registered.IsZero() {
		return j.registered.Equal(st.RegisteredAt)
	}
	return j.seg.Start >= st.RegisteredAt.UnixMilli()
}

func (r *Recorder) storeFile(ctx context.Context, st accounts.Stream, job uploadJob) (string, error) {
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

// quarantine moves a spooled segment that no retry can store to
// SPOOL/.quarantine/<stream>/<start>.<reason>.mp4, kept for an operator.
func (r *Recorder) quarantine(ctx context.Context, job uploadJob, reason, what string, cause error) {
	dst := filepath.Join(r.cfg.SpoolDir, quarantineDir, job.stream, fmt.Sprintf("%d.%s.mp4", job.seg.Start, reason))
	r.m.segments.WithLabelValues(reason).Inc()
	r.m.quarantined.WithLabelValues(reason).Inc()
	err := os.MkdirAll(filepath.Dir(dst), 0o755)
	if err == nil {
		err = os.Rename(job.path, dst)
	}
	if err != nil {
		// Not retried either way; left where it is, a restart tries again.
		r.log.ErrorContext(ctx, "segmenter: "+what+"; cannot quarantine it", "stream", job.stream, "start", job.seg.Start,
			"duration_ms", job.seg.DurationMS, "path", job.path, "cause", cause, "err", err)
		return
	}
	os.Rename(job.path+journalSuffix, dst+journalSuffix)
	r.log.ErrorContext(ctx, "segmenter: "+what+"; quarantined", "stream", job.stream, "start", job.seg.Start,
		"duration_ms", job.seg.DurationMS, "reason", reason, "path", dst, "err", cause)
}

// quarantineDir, under the spool, holds segments no retry can store. Its
// name is no stream id, so recovery never picks them up.
const quarantineDir = ".quarantine"
