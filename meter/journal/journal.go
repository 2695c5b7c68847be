// Package journal is an ingest node's crash-safe local record of the usage
// the meter has not committed yet (docs/billing.md). It knows nothing of
// usage batches' contents: it stores each batch as the JSON its caller
// encoded, so that it depends on nothing of the meter's.
package journal

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
// it. It holds no per-segment history: a segment's record lives only
// until the batch that counts it is written, and the file is rewritten
// with just the live records once it grows.
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
//     applies each journal's batches once, in seq order (ParseBatchID).
//   - c: the meter committed batch seq.
//
// Its methods are safe for concurrent use.
type Journal struct {
	dir string

	mu      sync.Mutex
	f       writer
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
	compactBytes int64     // rewrite the file once it is this big and twice the last rewrite
	rewritten    int64     // the size of the last rewrite: about the live records
	recovery     *Recovery // what Open found, until its one reader takes it

	// Tests replace these.
	syncDir       func(dir string) error
	afterSnapshot func() // a rewrite has taken its snapshot, without locks
}

// writer is the open journal file: an *os.File, or in tests one that
// fails as a full disk does.
type writer interface {
	io.WriterAt
	Truncate(size int64) error
	Sync() error
	Close() error
}

// Intent is a storage Put of Size bytes to Key that was about to start.
// Unless a batch counts it or NotCreated settles it, its outcome is
// decided by whether the object at Key carries PutID.
type Intent struct {
	Ord    uint64 // the record's number, listed by the batch that counts it
	Stream string
	Key    string
	Size   int64
	PutID  string
}

// Free is storage freed by retention or a purge that no batch counts yet.
type Free struct {
	Ord            uint64
	Stream         string
	Bytes, Objects int64
}

// Batch is a batch not known to be committed: Data is exactly the JSON
// its caller gave Journal.Batch.
type Batch struct {
	Seq  uint64
	Data json.RawMessage
}

// Recovery is what a journal held when it was opened: what the previous
// process left unsettled.
type Recovery struct {
	Batches []Batch  // to submit again first, in seq order
	Intents []Intent // to resolve against storage, in ord order
	Frees   []Free   // to count again, in ord order
}

// rec is one line's JSON. Its field names are the file format.
type rec struct {
	T       string          `json:"t"`
	J       string          `json:"j,omitempty"` // h: journal id
	N       uint64          `json:"n,omitempty"` // i, x, f: ord; h: next ord
	Q       uint64          `json:"q,omitempty"` // b, c: seq; h: next seq
	Stream  string          `json:"s,omitempty"`
	Key     string          `json:"k,omitempty"`
	PutID   string          `json:"p,omitempty"`
	Bytes   int64           `json:"b,omitempty"`
	Objects int64           `json:"o,omitempty"`
	Batch   json.RawMessage `json:"batch,omitempty"`
	Ords    [][2]uint64     `json:"ords,omitempty"` // b: the records it counts, as ranges [first, last]
}

const (
	fileName            = "usage.journal"
	defaultCompactBytes = 4 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Open opens (or creates) the journal in dir. What the previous process
// left is in Recovery; the file is rewritten with just that, so a start
// never inherits a big file.
func Open(dir string) (*Journal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("usage journal: %w", err)
	}
	j := &Journal{dir: dir, nextOrd: 1, nextSeq: 1, live: map[uint64][]byte{}, batches: map[uint64][]byte{},
		compactBytes: defaultCompactBytes, syncDir: fsutil.SyncDir, recovery: &Recovery{}}
	if err := j.read(j.recovery); err != nil {
		return nil, err
	}
	if j.id == "" {
		j.id = cluster.RandomID()[:16]
	}
	if err := j.compact(); err != nil {
		return nil, err
	}
	return j, nil
}

// Recovery hands what Open found to its one reader, which replays it:
// later calls find nothing, so nothing is replayed twice.
func (j *Journal) Recovery() Recovery {
	j.mu.Lock()
	defer j.mu.Unlock()
	r := j.recovery
	j.recovery = nil
	if r == nil {
		return Recovery{}
	}
	return *r
}

// read replays the file; a torn or corrupt tail (a crash mid-append) ends it.
func (j *Journal) read(out *Recovery) error {
	f, err := os.Open(filepath.Join(j.dir, fileName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("usage journal: %w", err)
	}
	defer f.Close()
	intents := map[uint64]Intent{}
	frees := map[uint64]Free{}
	batches := map[uint64]json.RawMessage{}
	br := bufio.NewReaderSize(f, 1<<16)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			break // EOF, or a last line without its newline: torn
		}
		r, ok := decodeLine(line)
		if !ok {
			break
		}
		switch r.T {
		case "h":
			j.id = r.J
			j.nextOrd, j.nextSeq = max(j.nextOrd, r.N), max(j.nextSeq, r.Q)
		case "i":
			intents[r.N] = Intent{Ord: r.N, Stream: r.Stream, Key: r.Key, Size: r.Bytes, PutID: r.PutID}
			j.live[r.N] = slices.Clone(line)
		case "f":
			frees[r.N] = Free{Ord: r.N, Stream: r.Stream, Bytes: r.Bytes, Objects: r.Objects}
			j.live[r.N] = slices.Clone(line)
		case "x":
			delete(intents, r.N)
			delete(j.live, r.N)
		case "b":
			if len(r.Batch) == 0 || string(r.Batch) == "null" {
				continue // no batch (absent or null): skipped, as the release before did
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
		out.Batches = append(out.Batches, Batch{Seq: seq, Data: batches[seq]})
	}
	for _, o := range slices.Sorted(maps.Keys(intents)) {
		out.Intents = append(out.Intents, intents[o])
	}
	for _, o := range slices.Sorted(maps.Keys(frees)) {
		out.Frees = append(out.Frees, frees[o])
	}
	return nil
}

func encodeLine(r rec) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(b)+10)
	out = fmt.Appendf(out, "%08x ", crc32.Checksum(b, crcTable))
	out = append(out, b...)
	return append(out, '\n'), nil
}

func decodeLine(line []byte) (rec, bool) {
	var r rec
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

// putID is the put id of intent ord: unique across journals and restarts.
func (j *Journal) putID(ord uint64) string { return "j" + j.id + "-" + strconv.FormatUint(ord, 10) }

// Intent durably records a storage Put about to start, before it starts:
// a crash at any point after leaves the Put for recovery to decide. The
// caller stores the returned PutID in the object's metadata.
func (j *Journal) Intent(stream, key string, size int64) (Intent, error) {
	j.mu.Lock()
	ord := j.nextOrd
	j.nextOrd++
	in := Intent{Ord: ord, Stream: stream, Key: key, Size: size, PutID: j.putID(ord)}
	line, err := encodeLine(rec{T: "i", N: ord, Stream: stream, Key: key, PutID: in.PutID, Bytes: size})
	var off int64
	if err == nil {
		off, err = j.appendLocked(line)
	}
	if err == nil {
		j.live[ord] = line
	}
	j.mu.Unlock()
	if err != nil {
		return Intent{}, err
	}
	return in, j.sync(off)
}

// NotCreated records that intent ord's Put created nothing, so recovery
// need not ask storage. Not fsynced, and a failure is ignored: a lost
// record only means that recovery asks.
func (j *Journal) NotCreated(ord uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.live, ord)
	if line, err := encodeLine(rec{T: "x", N: ord}); err == nil {
		_, _ = j.appendLocked(line) // lost: recovery asks storage instead
	}
}

// Free records freed storage and returns its ord, for the batch that
// counts it. Not fsynced: a free follows a deletion that already happened,
// and a lost one is what `vigil meter reconcile` repairs.
func (j *Journal) Free(stream string, bytes, objects int64) (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	ord := j.nextOrd
	j.nextOrd++
	line, err := encodeLine(rec{T: "f", N: ord, Stream: stream, Bytes: bytes, Objects: objects})
	if err == nil {
		_, err = j.appendLocked(line)
	}
	if err != nil {
		return 0, err
	}
	j.live[ord] = line
	return ord, nil
}

// NextBatch allocates a batch seq and the batch's id, j<journal id>-<seq>:
// seqs never repeat across restarts, since the meter applies a journal's
// batches once, in seq order.
func (j *Journal) NextBatch() (seq uint64, id string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	seq = j.nextSeq
	j.nextSeq++
	return seq, "j" + j.id + "-" + strconv.FormatUint(seq, 10)
}

// Batch durably records batch seq, encoded as data (JSON, returned as is
// by Recovery), and settles the records of ords that it counts. Call it
// before the batch is submitted: a replay after a crash is then this same
// batch, which the meter applies once.
func (j *Journal) Batch(seq uint64, data json.RawMessage, ords []uint64) error {
	line, err := encodeLine(rec{T: "b", Q: seq, Batch: data, Ords: ordRanges(ords)})
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

// Committed records that the meter applied batch seq, so it is not
// replayed. Not fsynced, and a failure is ignored: the meter answers a
// replay of an applied batch as a duplicate and changes nothing.
func (j *Journal) Committed(seq uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.batches, seq)
	if line, err := encodeLine(rec{T: "c", Q: seq}); err == nil {
		_, _ = j.appendLocked(line) // lost: the meter refuses the batch's replay
	}
}

// SetCompactBytes sets the size from which the file is rewritten (Open
// sets 4 MiB). Tests lower it to see rewrites happen under load.
func (j *Journal) SetCompactBytes(n int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.compactBytes = n
}

// CompactIfBig rewrites the file once it is compactBytes big and twice its
// last rewrite (which held about the live records): the cost of rewrites
// stays proportional to what is appended, whatever is live. Call it after
// Batch and Committed, which settle records.
func (j *Journal) CompactIfBig() error {
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
	hdr, _ := encodeLine(rec{T: "h", J: j.id, N: j.nextOrd, Q: j.nextSeq})
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

	tmp := filepath.Join(j.dir, fileName+".tmp")
	f, size, err := writeFile(tmp, recs)
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
		err = os.Rename(tmp, filepath.Join(j.dir, fileName))
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

// writeFile writes recs to a new file at path and fsyncs it.
func writeFile(path string, recs [][]byte) (*os.File, int64, error) {
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

// ParseBatchID parses a batch id NextBatch made, j<16 hex>-<seq>, into the
// journal's id and the seq: the meter keeps the last seq it applied per
// journal, to apply each batch once however late a replay comes.
func ParseBatchID(id string) (journal string, seq uint64, ok bool) {
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
