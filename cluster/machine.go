package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/klauspost/compress/zstd"
)

// The recent-request table deduplicates retried commands. It is bounded by
// count and by age (measured in proposer time, so every replica evicts the
// same entries): a client retries within seconds or minutes, not days.
const (
	defaultMaxRequests = 10_000
	defaultRequestTTL  = 24 * time.Hour
	// maxSnapshotBytes bounds decompression of a (possibly corrupt) snapshot.
	maxSnapshotBytes = 4 << 30
)

// ApplyFunc applies one command to its domain's state and returns the
// result for the proposer (JSON-encoded into the recent-request table). A
// refusal (an *Error) must leave the state unchanged. It must be
// deterministic: it reads no clock and iterates no map where order matters.
type ApplyFunc func(c *Command) (any, error)

// Section is one domain's part of the replicated state.
type Section struct {
	// Name keys the section in a snapshot.
	Name string
	// State points to a struct whose exported JSON fields are the section's
	// state. Field names are unique across sections (snapshots written
	// before sections held them all in one object).
	State any
	// Reset empties the state before a snapshot is restored into it.
	Reset func()
	// Restored checks a restored state and rebuilds what is derived from
	// it. It may be nil.
	Restored func() error
}

// Machine is the replicated state machine (raft.FSM): one command table,
// one recent-request table, one clock, and the sections of the domains
// that register with it. raft calls Apply, Snapshot and Restore from one
// goroutine; readers take RLock and never wait on raft.
type Machine struct {
	log         *slog.Logger
	maxRequests int
	requestTTL  time.Duration

	mu       sync.RWMutex
	apply    map[string]ApplyFunc
	sections []*section
	fields   map[string]*field // every section's fields by name
	core     core
	reqs     map[string]*requestRec // core.Requests by id
	// appliedIdx is core.Applied, published for readers that must not
	// wait on mu (Peer's read-your-writes wait).
	appliedIdx atomic.Uint64

	// scrub drops secrets from results that legacy commands recorded
	// (SetLegacyScrub); scrubPending counts the results that hold some.
	scrub        func(json.RawMessage) (json.RawMessage, bool)
	scrubPending int
}

// core is the machine's own section.
type core struct {
	Requests []*requestRec `json:"requests"` // oldest first
	Applied  uint64        `json:"applied_index"`
	// Clock is the latest proposer time applied: command times are clamped
	// to it, so the state's time never runs backwards (Apply).
	Clock time.Time `json:"clock"`
	// Nodes maps raft node id → HTTP address, so any node can forward a
	// write to the leader (peer.go).
	Nodes map[string]string `json:"nodes,omitempty"`
}

type requestRec struct {
	ID       string          `json:"id"`
	Identity string          `json:"identity"`
	At       time.Time       `json:"at"`
	Result   json.RawMessage `json:"result"`
}

type section struct {
	Section
	fields []*field
}

var (
	_ raft.FSM         = (*Machine)(nil)
	_ raft.BatchingFSM = (*Machine)(nil)
)

// NewMachine returns a machine with only its own section; domains add
// theirs with Register and their commands with Handle.
func NewMachine(log *slog.Logger) *Machine {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Machine{log: log, maxRequests: defaultMaxRequests, requestTTL: defaultRequestTTL,
		apply: map[string]ApplyFunc{}, fields: map[string]*field{}}
	m.Register(Section{Name: "cluster", State: &m.core, Reset: func() {
		m.core = core{Nodes: map[string]string{}}
		m.reqs = map[string]*requestRec{}
	}, Restored: func() error {
		for _, r := range m.core.Requests {
			m.reqs[r.ID] = r
		}
		if m.scrub != nil {
			m.scrubPending = m.scrubResults(true)
		}
		return nil
	}})
	m.core.Nodes, m.reqs = map[string]string{}, map[string]*requestRec{}
	m.Handle(CmdSetNode, m.SetNodeCmd)
	return m
}

// Register adds a domain's section. It panics on a name or field name
// already taken: that is a programming error, found by any test.
func (m *Machine) Register(s Section) {
	fs, err := structFields(s.State)
	if err != nil {
		panic(fmt.Sprintf("cluster: section %s: %v", s.Name, err))
	}
	for _, o := range m.sections {
		if o.Name == s.Name {
			panic("cluster: section registered twice: " + s.Name)
		}
	}
	for _, f := range fs {
		if m.fields[f.name] != nil {
			panic(fmt.Sprintf("cluster: section %s: field %q already belongs to another section", s.Name, f.name))
		}
		m.fields[f.name] = f
	}
	m.sections = append(m.sections, &section{Section: s, fields: fs})
}

// Handle sets the apply function of a command type of the table
// (commands.go). It panics on a type not in the table or handled twice.
func (m *Machine) Handle(typ string, f ApplyFunc) {
	if !slices.Contains(commandTypes, typ) {
		panic("cluster: command type not in the command table: " + typ)
	}
	if m.apply[typ] != nil {
		panic("cluster: command type handled twice: " + typ)
	}
	m.apply[typ] = f
}

// SetLegacyScrub sets the function that drops secrets from the results of
// legacy commands (it reports whether r held any). The first versioned
// command scrubs every recorded result: every replica does it at the same
// index, whichever snapshot it restored.
func (m *Machine) SetLegacyScrub(f func(r json.RawMessage) (json.RawMessage, bool)) { m.scrub = f }

// Check reports a command type of the table that no domain handles.
func (m *Machine) Check() error {
	for _, t := range commandTypes {
		if m.apply[t] == nil {
			return fmt.Errorf("cluster: no apply function for command type %s", t)
		}
	}
	return nil
}

// RLock locks the state for reading; domains' read methods hold it while
// they copy what they return.
func (m *Machine) RLock() { m.mu.RLock() }

// RUnlock undoes RLock.
func (m *Machine) RUnlock() { m.mu.RUnlock() }

// Clock returns the latest proposer time applied.
func (m *Machine) Clock() time.Time {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.core.Clock
}

// NodeHTTPAddr returns the HTTP address a node recorded for itself.
func (m *Machine) NodeHTTPAddr(id string) string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.core.Nodes[id]
}

// SetNodeCmd is the payload of CmdSetNode.
type SetNodeCmd struct {
	ID       string `json:"id"`
	HTTPAddr string `json:"http_addr"`
}

func (m *Machine) SetNodeCmd(c *Command) (any, error) {
	var p SetNodeCmd
	if err := c.Decode(&p); err != nil {
		return nil, err
	}
	if !validID(p.ID) || p.HTTPAddr == "" || len(p.HTTPAddr) > 256 {
		return nil, Invalid("malformed_command", "set_node needs a node id and an HTTP address")
	}
	if m.core.Nodes == nil {
		m.core.Nodes = map[string]string{}
	}
	m.core.Nodes[p.ID] = p.HTTPAddr
	return p, nil
}

// validID is storage.ValidID ([a-zA-Z0-9_-]{1,64}); cluster does not
// import storage.
func validID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Apply implements raft.FSM.
func (m *Machine) Apply(l *raft.Log) any {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.publishApplied()
	return m.applyLocked(l)
}

// publishApplied makes the applied index readable without the lock
// (AppliedIndex); call it with m.mu held for writing.
func (m *Machine) publishApplied() { m.appliedIdx.Store(m.core.Applied) }

// AppliedIndex returns the index of the last command this machine has
// applied, without waiting for the lock. Unlike raft's applied index, which
// counts an entry once it is handed to the machine's goroutine, it counts
// only what the state already shows.
func (m *Machine) AppliedIndex() uint64 { return m.appliedIdx.Load() }

// ApplyBatch implements raft.BatchingFSM: raft hands over every committed
// entry of a round at once, and one lock round trip serves them all.
func (m *Machine) ApplyBatch(logs []*raft.Log) []any {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.publishApplied()
	out := make([]any, len(logs))
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue // configuration entries: nothing for the state
		}
		out[i] = m.applyLocked(l)
	}
	return out
}

func (m *Machine) applyLocked(l *raft.Log) any {
	m.core.Applied = l.Index
	c, err := DecodeCommand(l.Data)
	if err != nil {
		m.log.Error("meter: undecodable command in the log", "index", l.Index, "err", err)
		return &Result{Err: toWire(Invalid("malformed_command", "undecodable command: %v", err))}
	}
	// Meter time never runs backwards whichever proposer stamped c; Apply
	// advances the clock to the time of every command it applies (a
	// refused one changes nothing). Once a command stamped at or after a
	// month's end is applied, nothing can change that month any more: that
	// is what makes a final billing run final.
	if c.Time.Before(m.core.Clock) {
		c.Time = m.core.Clock
	}
	if !c.Legacy() && m.scrubPending > 0 {
		m.scrubResults(false)
		m.scrubPending = 0
	}
	identity := c.identity()
	if c.RequestID != "" {
		if r := m.reqs[c.RequestID]; r != nil {
			if r.Identity != identity {
				return &Result{Err: toWire(Conflict("idempotency_key_reused",
					"request id %q was already used for a different request", c.RequestID))}
			}
			return &Result{Data: r.Result}
		}
	}
	f := m.apply[c.Type]
	if f == nil {
		return &Result{Err: toWire(Invalid("malformed_command", "unknown command type %q", c.Type))}
	}
	res, err := f(&c)
	if err != nil {
		// Refused commands changed nothing, so they need no deduplication.
		return &Result{Err: toWire(err)}
	}
	m.core.Clock = c.Time
	data, err := json.Marshal(res)
	if err != nil {
		return &Result{Err: toWire(err)}
	}
	if c.RequestID != "" {
		r := &requestRec{ID: c.RequestID, Identity: identity, At: c.Time, Result: data}
		m.core.Requests = append(m.core.Requests, r)
		m.reqs[r.ID] = r
		if c.Legacy() && m.scrub != nil {
			if _, found := m.scrub(data); found {
				m.scrubPending++
			}
		}
	}
	m.evictRequests(c.Time.Add(-m.requestTTL), m.maxRequests)
	return &Result{Data: data}
}

func (m *Machine) evictRequests(before time.Time, max int) {
	reqs := m.core.Requests
	n := 0
	for n < len(reqs) && (len(reqs)-n > max || reqs[n].At.Before(before)) {
		delete(m.reqs, reqs[n].ID)
		n++
	}
	if n > 0 {
		m.core.Requests = slices.Delete(reqs, 0, n)
	}
}

// scrubResults scrubs the recorded results (only counts them with count)
// and returns how many held something to scrub.
func (m *Machine) scrubResults(count bool) int {
	n := 0
	for _, r := range m.core.Requests {
		out, found := m.scrub(r.Result)
		if !found {
			continue
		}
		n++
		if !count {
			r.Result = out
		}
	}
	return n
}

// Snapshot implements raft.FSM. The state is encoded here, under the read
// lock, so the snapshot is consistent; Persist only writes bytes.
func (m *Machine) Snapshot() (raft.FSMSnapshot, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("meter: encode snapshot: %w", err)
	}
	if err := m.writeSnapshot(enc); err != nil {
		enc.Close()
		return nil, fmt.Errorf("meter: encode snapshot: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("meter: encode snapshot: %w", err)
	}
	return fsmSnapshot(buf.Bytes()), nil
}

// Restore implements raft.FSM. A snapshot that does not decode changes
// nothing; one that decodes but fails a section's check (Restored) leaves
// that section as restored, and raft stops on the error.
func (m *Machine) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	dec, err := zstd.NewReader(rc, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxSnapshotBytes))
	if err != nil {
		return fmt.Errorf("meter: restore snapshot: %w", err)
	}
	defer dec.Close()
	// Decode into fresh copies of the sections first: a snapshot that
	// fails to decode leaves the state as it was.
	sh, err := m.newShadow()
	if err != nil {
		return fmt.Errorf("meter: restore snapshot: %w", err)
	}
	if err := sh.read(dec); err != nil {
		return fmt.Errorf("meter: restore snapshot (truncated or corrupt?): %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.publishApplied()
	for _, s := range m.sections {
		s.Reset()
	}
	for _, name := range sh.decoded {
		m.fields[name].v.Set(sh.fields[name].v)
	}
	for _, s := range m.sections {
		if s.Restored == nil {
			continue
		}
		if err := s.Restored(); err != nil {
			return fmt.Errorf("meter: restore snapshot: %s: %w", s.Name, err)
		}
	}
	return nil
}

type fsmSnapshot []byte

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("meter: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s fsmSnapshot) Release() {}

// field is a top-level field of a section as encoding/json sees it.
type field struct {
	name      string
	omitEmpty bool
	v         reflect.Value // addressable
}

// structFields lists the JSON fields of the struct ptr points to, in
// declaration order (the order json.Marshal writes them).
func structFields(ptr any) ([]*field, error) {
	pv := reflect.ValueOf(ptr)
	if pv.Kind() != reflect.Pointer || pv.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("state is %T, not a pointer to a struct", ptr)
	}
	sv := pv.Elem()
	t := sv.Type()
	var out []*field
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if !f.IsExported() || tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" || f.Anonymous {
			return nil, fmt.Errorf("field %s: streaming needs an explicit JSON name", f.Name)
		}
		sf := &field{name: name, v: sv.Field(i)}
		for _, o := range strings.Split(opts, ",") {
			switch o {
			case "":
			case "omitempty":
				sf.omitEmpty = true
			default:
				return nil, fmt.Errorf("field %s: JSON option %q not supported by the streaming encoder", f.Name, o)
			}
		}
		out = append(out, sf)
	}
	return out, nil
}

// Applied returns the index of the last log entry applied.
func (m *Machine) Applied() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.core.Applied
}

// SetAppliedForTest sets the applied index (tests compare states across a
// refused command, which only moves the index).
func (m *Machine) SetAppliedForTest(i uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.core.Applied = i
	m.publishApplied()
}

// SetMaxRequests bounds the recent-request table (tests).
func (m *Machine) SetMaxRequests(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maxRequests = n
}

// RecentRequests returns the ids in the recent-request table, oldest
// first, and how many its index holds.
func (m *Machine) RecentRequests() (ids []string, indexed int) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, r := range m.core.Requests {
		ids = append(ids, r.ID)
	}
	return ids, len(m.reqs)
}

// RecentResult returns the recorded result of request id.
func (m *Machine) RecentResult(id string) (json.RawMessage, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	r := m.reqs[id]
	if r == nil {
		return nil, false
	}
	return r.Result, true
}

// WriteJSON writes the state as one JSON object of every section's fields
// (what Digest hashes), for tests and diagnostics.
func (m *Machine) WriteJSON(w io.Writer) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	ow := newObjectWriter(w)
	if err := ow.fields(m.digestFields()); err != nil {
		return err
	}
	return ow.bw.Flush()
}
