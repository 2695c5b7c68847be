// Package purge holds the purge jobs: the durable record of freeing
// everything a deleted camera or stream held (the worker that does it is
// retention.Purger). It is a domain of the replicated state machine
// (package cluster): its state is a section, its writes are commands.
package purge

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/storage"
)

// State is the purge section of the replicated state.
type State struct {
	Purges map[string]*PurgeJob `json:"purges,omitempty"`

	m *cluster.Machine
}

// Register adds the purge section and commands to m.
func Register(m *cluster.Machine) *State {
	st := &State{m: m, Purges: map[string]*PurgeJob{}}
	reset := func() { st.Purges = map[string]*PurgeJob{} }
	m.Register(cluster.Section{Name: "purge", State: st, Reset: reset, Restored: func() error {
		if st.Purges == nil { // snapshots from before purge jobs
			st.Purges = map[string]*PurgeJob{}
		}
		return nil
	}})
	m.Handle(cluster.CmdPurgeProgress, func(c *cluster.Command) (any, error) {
		var p ProgressCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.ProgressCmd(c.Time, p)
	})
	m.Handle(cluster.CmdPurgeDone, func(c *cluster.Command) (any, error) {
		var p DoneCmd
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return st.DoneCmd(c.Time, p.ID)
	})
	return st
}

// Add implements accounts.Purges: a deletion records a pending job.
func (st *State) Add(at time.Time, id, account, camera string, streams []string, stream string) {
	st.Purges[id] = &PurgeJob{
		ID: id, Camera: camera, Account: account, Streams: streams, Stream: stream,
		State: PurgePending, CreatedAt: at, UpdatedAt: at,
	}
}

// Done implements accounts.Purges.
func (st *State) Done(id string) (exists, done bool) {
	j := st.Purges[id]
	return j != nil, j != nil && j.State == PurgeDone
}

// Proposer commits commands (a *cluster.Peer).
type Proposer interface {
	Propose(ctx context.Context, typ, requestID, nonce string, payload, out any) error
}

// Jobs reads the purge jobs locally and writes them through raft.
type Jobs struct {
	st  *State
	p   Proposer
	log *slog.Logger
}

// New returns the jobs over st (from Register), writing through p.
func New(st *State, p Proposer, log *slog.Logger) *Jobs {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Jobs{st: st, p: p, log: log}
}

var (
	invalid  = cluster.Invalid
	notFound = cluster.NotFound
)

// ErrNotFound is returned for an unknown job.
var ErrNotFound = cluster.ErrNotFound

// Purge job states (GET /v1/purges/{id}).
const (
	PurgePending = "pending"
	PurgeRunning = "running"
	PurgeDone    = "done"
	PurgeFailed  = "failed"
)

// PurgeJob is the durable record of freeing everything a deleted camera
// held. It lives in the replicated state, so a purge interrupted by a crash
// is found again and resumed by whichever node runs purge workers.
//
// Cursor makes the counts exact across crashes: the worker records a batch
// (its last key as the new cursor, its objects and bytes) before deleting
// it, so after a crash the objects at or before the cursor that still exist
// were already counted and are deleted without being counted again.
type PurgeJob struct {
	ID      string   `json:"id"`
	Camera  string   `json:"camera"`
	Account string   `json:"account"`
	Streams []string `json:"streams"`
	// Stream is set when one stream was deleted (DELETE /v1/streams/{id}),
	// not its camera: only that stream's prefix is purged.
	Stream         string     `json:"stream,omitempty"`
	State          string     `json:"state"`
	ObjectsDeleted int64      `json:"objects_deleted"`
	BytesFreed     int64      `json:"bytes_freed"`
	Cursor         string     `json:"cursor,omitempty"`
	Error          string     `json:"error,omitempty"`
	CreatedAt      time.Time  `json:"created_at"`
	UpdatedAt      time.Time  `json:"updated_at"`
	DoneAt         *time.Time `json:"done_at,omitempty"`
}

// Prefix is the storage prefix holding everything the job purges: the
// camera's, or the one stream's.
func (p PurgeJob) Prefix() string {
	if p.Stream != "" {
		return storage.StreamRef{Account: p.Account, Camera: p.Camera, Stream: p.Stream}.StreamPrefix()
	}
	return storage.CameraPrefix(p.Account, p.Camera)
}

// Refs are the purged camera's streams in the key space.
func (p PurgeJob) Refs() []storage.StreamRef {
	refs := make([]storage.StreamRef, len(p.Streams))
	for i, s := range p.Streams {
		refs[i] = storage.StreamRef{Account: p.Account, Camera: p.Camera, Stream: s}
	}
	return refs
}

func clonePurge(p *PurgeJob) PurgeJob {
	out := *p
	out.Streams = slices.Clone(p.Streams)
	if p.DoneAt != nil {
		t := *p.DoneAt
		out.DoneAt = &t
	}
	return out
}

// ProgressCmd is the payload of cluster.CmdPurgeProgress.
type ProgressCmd struct {
	ID      string `json:"id"`
	Cursor  string `json:"cursor"`
	Objects int64  `json:"objects"`
	Bytes   int64  `json:"bytes"`
	Error   string `json:"error,omitempty"`
}

// DoneCmd is the payload of cluster.CmdPurgeDone.
type DoneCmd struct {
	ID string `json:"id"`
}

func (st *State) ProgressCmd(at time.Time, p ProgressCmd) (any, error) {
	j := st.Purges[p.ID]
	if j == nil {
		return nil, notFound("purge %s not found", p.ID)
	}
	if j.State == PurgeDone {
		return clonePurge(j), nil
	}
	if p.Objects < 0 || p.Bytes < 0 {
		return nil, invalid("malformed_command", "purge progress must not be negative")
	}
	// The cursor only moves forward: a stale proposal cannot rewind it.
	if p.Cursor > j.Cursor {
		j.Cursor = p.Cursor
	}
	j.ObjectsDeleted += p.Objects
	j.BytesFreed += p.Bytes
	j.State, j.Error = PurgeRunning, ""
	if p.Error != "" {
		j.State, j.Error = PurgeFailed, p.Error
	}
	j.UpdatedAt = at
	return clonePurge(j), nil
}

func (st *State) DoneCmd(at time.Time, id string) (any, error) {
	j := st.Purges[id]
	if j == nil {
		return nil, notFound("purge %s not found", id)
	}
	if j.State != PurgeDone {
		t := at
		j.State, j.Error, j.DoneAt, j.UpdatedAt = PurgeDone, "", &t, at
	}
	return clonePurge(j), nil
}

// Purge returns a purge job; ErrNotFound when unknown.
func (j *Jobs) Purge(ctx context.Context, id string) (PurgeJob, error) {
	j.st.m.RLock()
	defer j.st.m.RUnlock()
	job := j.st.Purges[id]
	if job == nil {
		return PurgeJob{}, fmt.Errorf("meter: purge %s: %w", id, ErrNotFound)
	}
	return clonePurge(job), nil
}

// OpenPurges returns the purge jobs not done yet, oldest first.
func (j *Jobs) OpenPurges(ctx context.Context) ([]PurgeJob, error) {
	j.st.m.RLock()
	defer j.st.m.RUnlock()
	var out []PurgeJob
	for _, job := range j.st.Purges {
		if job.State != PurgeDone {
			out = append(out, clonePurge(job))
		}
	}
	sort.Slice(out, func(i, k int) bool {
		if !out[i].CreatedAt.Equal(out[k].CreatedAt) {
			return out[i].CreatedAt.Before(out[k].CreatedAt)
		}
		return out[i].ID < out[k].ID
	})
	return out, nil
}

// PurgeProgress records a batch the purge worker is about to delete:
// objects and bytes are added to the job's counts and cursor becomes the
// batch's last key. The request id is derived from job and cursor, so a
// retried proposal of the same batch counts once.
func (j *Jobs) PurgeProgress(ctx context.Context, id, cursor string, objects, bytes int64) (PurgeJob, error) {
	var r PurgeJob
	return r, j.p.Propose(ctx, cluster.CmdPurgeProgress, "purge/"+id+"/"+cursor, "",
		ProgressCmd{ID: id, Cursor: cursor, Objects: objects, Bytes: bytes}, &r)
}

// PurgeFailed records that the job hit an error; the worker keeps retrying
// and the next progress sets it running again.
func (j *Jobs) PurgeFailed(ctx context.Context, id, msg string) (PurgeJob, error) {
	var r PurgeJob
	return r, j.p.Propose(ctx, cluster.CmdPurgeProgress, "", "", ProgressCmd{ID: id, Error: msg}, &r)
}

// PurgeDone marks a purge finished: storage and index hold nothing of the
// camera. Its id can then be created again.
func (j *Jobs) PurgeDone(ctx context.Context, id string) (PurgeJob, error) {
	var r PurgeJob
	return r, j.p.Propose(ctx, cluster.CmdPurgeDone, "purge-done/"+id, "", DoneCmd{ID: id}, &r)
}

// Patterns are the patterns Handler serves.
func Patterns() []string { return []string{"GET /v1/purges/{id}"} }

// Scope is the scope rule (an *accounts.Registry).
type Scope interface {
	Allowed(p auth.Principal, account string, need accounts.Need) error
}

// Handler serves GET /v1/purges/{id}. Mount it behind auth.Middleware: a
// job is read by whoever may read its account in scope.
func (j *Jobs) Handler(scope Scope) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/purges/{id}", cluster.WithID(func(w http.ResponseWriter, r *http.Request, id string) {
		j.handleGetPurge(w, r, id, scope)
	}))
	return mux
}

func (j *Jobs) handleGetPurge(w http.ResponseWriter, r *http.Request, id string, scope Scope) {
	job, err := j.Purge(r.Context(), id)
	// An unknown job has no account, which is outside every user's scope:
	// only the operator learns that it does not exist.
	if err := scope.Allowed(auth.FromContext(r.Context()), job.Account, accounts.Read); err != nil {
		accounts.WriteForbidden(w, err)
		return
	}
	if err != nil {
		cluster.WriteError(w, r, j.log, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{
		"id": job.ID, "state": job.State, "camera": job.Camera,
		"objects_deleted": job.ObjectsDeleted, "bytes_freed": job.BytesFreed,
		"error": job.Error, "created_at": job.CreatedAt, "done_at": job.DoneAt,
	})
}
