package meter

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/fsutil"
)

// Journal is an ingest node's local record of the usage the meter has not
// committed yet, so that a killed process neither loses nor double-counts
// it (docs/billing.md). It holds no per-segment history: a segment's record
// lives only until the batch that counts it is written, and the file is
// rewritten with just the live records once it grows.
//
// Records, one per line (CRC-32C, space, JSON):
//   - i: an intent, written and fsynced before a segment's storage Put; its
//     put id goes into the object's metadata. Unless a later batch record
//     lists it, recovery asks storage whether the object carries that put
//     id: only then did this Put create it.
//   - x: the Put did not create the object.
//   - f: bytes and objects freed by retention or a purge.
//   - b: a batch (written and fsynced before it is submitted) and the
//     records it counts; its id is j<journal id>-<seq>, and the meter
//     applies each journal's batches once, in seq order (usage.go).
//   - c: the meter committed batch seq.
//
// Its methods are safe for concurrent use.
type Journal struct {
	dir string

	mu      sync.Mutex
	f       journalWriter
	id      string
	nextOrd uint64
	nextSeq uint64
	written int64             // bytes appended over the journal's life (a logical offset)
	fileLen int64             // bytes in the current file
	live    map[uint64][]byte // ord → line: intents and frees no batch counts yet
	batches map[uint64][]byte // seq → line: batches not known to be committed

	syncMu sync.Mutex // one fsync at a time; a waiter's turn usually finds its bytes synced
	synced int64

	compactMu    sync.Mutex // one rewrite at a time
	tail         [][]byte   // during a rewrite: the records appended since its snapshot
	closed       bool
	compactBytes int64            // rewrite the file once it is this big and twice the last rewrite
	rewritten    int64            // the size of the last rewrite: about the live records
	recovery     *journalRecovery // what Open found, until an Aggregator takes it

	// Tests replace these.
	syncDir       func(dir string) error
	afterSnapshot func() // a rewrite has taken its snapshot, without locks
}

// journalWriter is the open journal file: an *os.File, or in tests one
// that fails as a full disk does.
type journalWriter interface {
	io.WriterAt
	Truncate(size int64) error
	Sync() error
	Close() error
}

type journalIntent struct {
	Ord    uint64
	Stream string
	Key    string
	Size   int64
	PutID  string
}

type journalFree struct {
	Ord            uint64
	Stream         string
	Bytes, Objects int64
}

type journalRec struct {
	T       string      `json:"t"`
	J       string      `json:"j,omitempty"` // h: journal id
	N       uint64      `json:"n,omitempty"` // i, x, f: ord; h: next ord
	Q       uint64      `json:"q,omitempty"` // b, c: seq; h: next seq
	Stream  string      `json:"s,omitempty"`
	Key     string      `json:"k,omitempty"`
	PutID   string      `json:"p,omitempty"`
	Bytes   int64       `json:"b,omitempty"`
	Objects int64       `json:"o,omitempty"`
	Batch   *UsageBatch `json:"batch,omitempty"`
	Ords    [][2]uint64 `json:"ords,omitempty"` // b: the records it counts, as ranges [first, last]
}

const (
	journalFile         = "usage.journal"
	defaultCompactBytes = 4 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// journalRecovery is what a journal held when it was opened.
type journalRecovery struct {
	batches []*UsageBatch // not known to be committed, in seq order
	seqs    []uint64
	intents []journalIntent // to resolve against storage
	frees   []journalFree   // to count again
}

// OpenJournal opens (or creates) the journal in dir.
func OpenJournal(dir string) (*Journal, error) {
	j, rec, err := openJournal(dir)
	if err != nil {
		return nil, err
	}
	j.recovery = rec
	return j, nil
}

// takeRecovery hands what Open found to the one aggregator that replays it.
func (j *Journal) takeRecovery() *journalRecovery {
	j.mu.Lock()
	defer j.mu.Unlock()
	r := j.recovery
	j.recovery = nil
	if r == nil {
		r = &journalRecovery{}
	}
	return r
}

func openJournal(dir string) (*Journal, *journalRecovery, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("usage journal: %w", err)
	}
	j := &Journal{dir: dir, nextOrd: 1, nextSeq: 1, live: map[uint64][]byte{}, batches: map[uint64][]byte{},
		compactBytes: defaultCompactBytes, syncDir: fsutil.SyncDir}
	rec := &journalRecovery{}
	if err := j.read(rec); err != nil {
		return nil, nil, err
	}
	if j.id == "" {
		j.id = cluster.RandomID()[:16]
	}
	if err := j.compact(); err != nil {
		return nil, nil, err
	}
	return j, rec, nil
}

// read replays the file; a torn or corrupt tail (a crash mid-append) ends it.
func (j *Journal) read(rec *journalRecovery) error {
	f, err := os.Open(filepath.Join(j.dir, journalFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("usage journal: %w", err)
	}
	defer f.Close()
	intents := map[uint64]journalIntent{}
	frees := map[uint64]journalFree{}
	batches := map[uint64]*UsageBatch{}
	r := bufio.NewReaderSize(f, 1<<16)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			break // EOF, or a last line without its newline: torn
		}
		r, ok := decodeJournalLine(line)
		if !ok {
			break
		}
		switch r.T {
		case "h":
			j.id = r.J
			j.nextOrd, j.nextSeq = max(j.nextOrd, r.N), max(j.nextSeq, r.Q)
		case "i":
			intents[r.N] = journalIntent{Ord: r.N, Stream: r.Stream, Key: r.Key, Size: r.Bytes, PutID: r.PutID}
			j.live[r.N] = slices.Clone(line)
		case "f":
			frees[r.N] = journalFree{Ord: r.N, Stream: r.Stream, Bytes: r.Bytes, Objects: r.Objects}
			j.live[r.N] = slices.Clone(line)
		case "x":
			delete(intents, r.N)
			delete(j.live, r.N)
		case "b":
			if r.Batch == nil {
				continue
			}
			for _, rg := range r.Ords {
				for o := rg[0]; o <= rg[1]; o++ {
					delete(intents, o)
					delete(frees, o)
					delete(j.live, o)
				}
			}
			batches[r.Q] = r.Batch
			j.batches[r.Q] = slices.Clone(line)
			j.nextSeq = max(j.nextSeq, r.Q+1)
		case "c":
			delete(batches, r.Q)
			delete(j.batches, r.Q)
		}
		if r.T == "i" || r.T == "f" {
			j.nextOrd = max(j.nextOrd, r.N+1)
		}
	}
	for _, seq := range slices.Sorted(maps.Keys(batches)) {
		rec.batches = append(rec.batches, batches[seq])
		rec.seqs = append(rec.seqs, seq)
	}
	for _, o := range slices.Sorted(maps.Keys(intents)) {
		rec.intents = append(rec.intents, intents[o])
	}
	for _, o := range slices.Sorted(maps.Keys(frees)) {
		rec.frees = append(rec.frees, frees[o])
	}
	return nil
}

func encodeJournalLine(r journalRec) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(b)+10)
	out = fmt.Appendf(out, "%08x ", crc32.Checksum(b, crcTable))
	out = append(out, b...)
	return append(out, '\n'), nil
}

func decodeJournalLine(line []byte) (journalRec, bool) {
	var r journalRec
	line = line[:len(line)-1]
	if len(line) < 10 || line[8] != ' ' {
		return r, false
	}
	var sum [4]byte
	if _, err := hex.Decode(sum[:], line[:8]); err != nil {
		return r, false
	}
	body := line[9:]
	if uint32(sum[0])<<24|uint32(sum[1])<<16|uint32(sum[2])<<8|uint32(sum[3]) != crc32.Checksum(body, crcTable) {
		return r, false
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return r, false
	}
	return r, true
}

// appendLocked writes one record and returns the logical offset after it.
func (j *Journal) appendLocked(line []byte) (int64, error) {
	if j.f == nil {
		return 0, errors.New("usage journal: closed")
	}
	// Each record is written at the end of the last good one: a write that
	// failed part-way (a full disk) leaves a fragment that the next append
	// overwrites, or the truncation removes, so no later record ever sits
	// behind one that recovery would read as a torn tail.
	if _, err := j.f.WriteAt(line, j.fileLen); err != nil {
		_ = j.f.Truncate(j.fileLen) // best effort: a leftover is past the end and holds no newline
		return 0, fmt.Errorf("usage journal: %w", err)
	}
	j.written += int64(len(line))
	j.fileLen += int64(len(line))
	if j.tail != nil {
		j.tail = append(j.tail, line)
	}
	return j.written, nil
}

// sync makes everything up to the logical offset upto durable. Callers that
// arrive while an fsync runs share the next one (group commit).
func (j *Journal) sync(upto int64) error {
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	if j.synced >= upto {
		return nil
	}
	j.mu.Lock()
	f, end := j.f, j.written
	j.mu.Unlock()
	if f == nil {
		return errors.New("usage journal: closed")
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("usage journal: sync: %w", err)
	}
	j.synced = end
	return nil
}

// PutID is the put id of intent ord: unique across journals and restarts.
func (j *Journal) putID(ord uint64) string { return "j" + j.id + "-" + strconv.FormatUint(ord, 10) }

// intent durably records a Put about to start and returns its ord and put id.
func (j *Journal) intent(stream, key string, size int64) (uint64, string, error) {
	j.mu.Lock()
	ord := j.nextOrd
	j.nextOrd++
	pid := j.putID(ord)
	line, err := encodeJournalLine(journalRec{T: "i", N: ord, Stream: stream, Key: key, PutID: pid, Bytes: size})
	var off int64
	if err == nil {
		off, err = j.appendLocked(line)
	}
	if err == nil {
		j.live[ord] = line
	}
	j.mu.Unlock()
	if err != nil {
		return 0, "", err
	}
	return ord, pid, j.sync(off)
}

// notCreated records that intent ord's Put created nothing.
func (j *Journal) notCreated(ord uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.live, ord)
	if line, err := encodeJournalLine(journalRec{T: "x", N: ord}); err == nil {
		_, _ = j.appendLocked(line) // lost: recovery asks storage instead
	}
}

// free records freed storage and returns its ord. Not fsynced: a free
// follows a deletion that already happened, and a lost one is what
// `vigil meter reconcile` repairs.
func (j *Journal) free(stream string, bytes, objects int64) (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	ord := j.nextOrd
	j.nextOrd++
	line, err := encodeJournalLine(journalRec{T: "f", N: ord, Stream: stream, Bytes: bytes, Objects: objects})
	if err == nil {
		_, err = j.appendLocked(line)
	}
	if err != nil {
		return 0, err
	}
	j.live[ord] = line
	return ord, nil
}

// nextBatch allocates a batch seq and its id.
func (j *Journal) nextBatch() (uint64, string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	seq := j.nextSeq
	j.nextSeq++
	return seq, "j" + j.id + "-" + strconv.FormatUint(seq, 10)
}

// batch durably records batch seq and the records it counts, before it is
// submitted.
func (j *Journal) batch(seq uint64, b *UsageBatch, ords []uint64) error {
	line, err := encodeJournalLine(journalRec{T: "b", Q: seq, Batch: b, Ords: ordRanges(ords)})
	if err != nil {
		return err
	}
	j.mu.Lock()
	off, err := j.appendLocked(line)
	if err == nil {
		for _, o := range ords {
			delete(j.live, o)
		}
		j.batches[seq] = line
	}
	j.mu.Unlock()
	if err != nil {
		return err
	}
	return j.sync(off)
}

// ordRanges sorts ords into ranges: records settle about in the order
// they were written, so a batch's list stays short.
func ordRanges(ords []uint64) [][2]uint64 {
	ords = slices.Clone(ords)
	slices.Sort(ords)
	var out [][2]uint64
	for _, o := range ords {
		if n := len(out); n > 0 && out[n-1][1]+1 >= o {
			out[n-1][1] = max(out[n-1][1], o)
			continue
		}
		out = append(out, [2]uint64{o, o})
	}
	return out
}

// committed records that the meter applied batch seq.
func (j *Journal) committed(seq uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.batches, seq)
	if line, err := encodeJournalLine(journalRec{T: "c", Q: seq}); err == nil {
		_, _ = j.appendLocked(line) // lost: the meter refuses the batch's replay
	}
}

// compactIfBig rewrites the file once it is compactBytes big and twice its
// last rewrite (which held about the live records): the cost of rewrites
// stays proportional to what is appended, whatever is live.
func (j *Journal) compactIfBig() error {
	j.compactMu.Lock()
	defer j.compactMu.Unlock()
	j.mu.Lock()
	big := j.fileLen >= max(j.compactBytes, 2*j.rewritten)
	j.mu.Unlock()
	if !big {
		return nil
	}
	return j.compact()
}

// compact rewrites the file with the header and the live records only
// (temp file, fsync, rename, fsync of the directory). The bulk is written
// without holding mu, so appends go on meanwhile; they are captured and
// written to the new file before the swap. Callers hold compactMu (or own
// the journal). Lock order: syncMu, then mu.
func (j *Journal) compact() error {
	j.mu.Lock()
	hdr, _ := encodeJournalLine(journalRec{T: "h", J: j.id, N: j.nextOrd, Q: j.nextSeq})
	recs := [][]byte{hdr}
	for _, m := range []map[uint64][]byte{j.live, j.batches} {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			recs = append(recs, m[k]) // lines are never modified
		}
	}
	j.tail = [][]byte{}
	j.mu.Unlock()
	if j.afterSnapshot != nil {
		j.afterSnapshot()
	}

	tmp := filepath.Join(j.dir, journalFile+".tmp")
	f, size, err := writeJournalFile(tmp, recs)
	if err != nil {
		j.mu.Lock()
		j.tail = nil
		j.mu.Unlock()
		return fmt.Errorf("usage journal: compact: %w", err)
	}

	// The swap: syncMu keeps sync from fsyncing the old file meanwhile, so
	// that synced moves only once the new file is durable under the name.
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	j.mu.Lock()
	tail := j.tail
	j.tail = nil
	closed := j.closed
	for _, line := range tail {
		if _, err = f.WriteAt(line, size); err != nil {
			break
		}
		size += int64(len(line))
	}
	if err == nil && !closed && len(tail) > 0 {
		err = f.Sync()
	}
	if err == nil && !closed {
		err = os.Rename(tmp, filepath.Join(j.dir, journalFile))
	}
	if err != nil || closed {
		j.mu.Unlock()
		f.Close()
		os.Remove(tmp)
		if err == nil {
			err = errors.New("closed")
		}
		return fmt.Errorf("usage journal: compact: %w", err)
	}
	// Renamed: appends go to the new file from now on, even if the
	// directory's fsync below fails.
	if j.f != nil {
		j.f.Close()
	}
	j.f, j.fileLen, j.rewritten = f, size, size
	upto := j.written
	j.mu.Unlock()
	if err := j.syncDir(j.dir); err != nil {
		return fmt.Errorf("usage journal: compact: %w", err)
	}
	j.synced = max(j.synced, upto)
	return nil
}

// writeJournalFile writes recs to a new file at path and fsyncs it.
func writeJournalFile(path string, recs [][]byte) (*os.File, int64, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, 0, err
	}
	w := bufio.NewWriterSize(f, 1<<16)
	var size int64
	for _, r := range recs {
		n, _ := w.Write(r)
		size += int64(n)
	}
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, 0, err
	}
	return f, size, nil
}

// Close closes the file; the journal keeps what it holds for the next start.
func (j *Journal) Close() error {
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	j.mu.Lock()
	defer j.mu.Unlock()
	j.closed = true
	if j.f == nil {
		return nil
	}
	err := j.f.Sync()
	if cerr := j.f.Close(); err == nil {
		err = cerr
	}
	j.f = nil
	return err
}

// journalBatchID parses a journal batch id, j<16 hex>-<seq>.
func journalBatchID(id string) (journal string, seq uint64, ok bool) {
	src, n, found := strings.Cut(id, "-")
	if !found || len(src) != 17 || src[0] != 'j' {
		return "", 0, false
	}
	if _, err := hex.DecodeString(src[1:]); err != nil {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(n, 10, 64)
	if err != nil || seq == 0 {
		return "", 0, false
	}
	return src[1:], seq, true
}

var _ io.Closer = (*Journal)(nil)
