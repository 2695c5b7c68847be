package meter

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/storage"
)

// Purge job states (GET /v1/purges/{id}).
const (
	PurgePending = "pending"
	PurgeRunning = "running"
	PurgeDone    = "done"
	PurgeFailed  = "failed"
)

// Purge commands.
const (
	cmdPurgeProgress = "purge_progress"
	cmdPurgeDone     = "purge_done"
	cmdDeleteAccount = "delete_account"
	cmdDeleteStream  = "delete_stream"
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

// retiredCamera keeps a deleted, purged camera and its streams once its id
// is re-created, so that what past billing runs need is not lost.
type retiredCamera struct {
	Camera  Camera       `json:"camera"`
	Streams []*streamRec `json:"streams"`
}

type purgeProgress struct {
	ID      string `json:"id"`
	Cursor  string `json:"cursor"`
	Objects int64  `json:"objects"`
	Bytes   int64  `json:"bytes"`
	Error   string `json:"error,omitempty"`
}

type purgeDone struct {
	ID string `json:"id"`
}

type deleteAccount struct {
	ID string `json:"id"`
}

type deleteStream struct {
	ID string `json:"id"`
}

// newPurge records the purge job of camera c, deleted at at.
func (st *state) newPurge(at time.Time, c *cameraRec, id string) {
	st.Purges[id] = &PurgeJob{
		ID: id, Camera: c.ID, Account: c.Account, Streams: slices.Clone(c.Streams),
		State: PurgePending, CreatedAt: at, UpdatedAt: at,
	}
}

// applyPurge applies the purge commands; ok is false for other types.
func (st *state) applyPurge(c *Command, dec func(any) error) (res any, ok bool, err error) {
	switch c.Type {
	case cmdPurgeProgress:
		var p purgeProgress
		if err := dec(&p); err != nil {
			return nil, true, err
		}
		res, err := st.purgeProgress(c.Time, p)
		return res, true, err
	case cmdPurgeDone:
		var p purgeDone
		if err := dec(&p); err != nil {
			return nil, true, err
		}
		res, err := st.purgeDone(c.Time, p.ID)
		return res, true, err
	case cmdDeleteAccount:
		var p deleteAccount
		if err := dec(&p); err != nil {
			return nil, true, err
		}
		res, err := st.deleteAccount(c.Time, p.ID, c.Nonce, c.legacy())
		return res, true, err
	case cmdDeleteStream:
		var p deleteStream
		if err := dec(&p); err != nil {
			return nil, true, err
		}
		res, err := st.deleteStream(c.Time, p.ID, c.Nonce)
		return res, true, err
	}
	return st.applyLease(c, dec) // lease.go
}

func (st *state) purgeProgress(at time.Time, p purgeProgress) (any, error) {
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

func (st *state) purgeDone(at time.Time, id string) (any, error) {
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

// reuseCamera lets a deleted camera's id be created again once its purge is
// done: the old records move to Retired and the new camera starts empty.
func (st *state) reuseCamera(c *cameraRec) error {
	if j := st.Purges[c.PurgeID]; j == nil || j.State != PurgeDone {
		return conflict("deleted_id", "camera %s was deleted and its purge is not done yet; retry once GET /v1/purges/%s says done", c.ID, c.PurgeID)
	}
	// A stream deleted on its own before the camera has its own job, which
	// must not purge the new camera's video.
	for _, sid := range c.Streams {
		if s := st.Streams[sid]; s != nil && s.PurgeID != "" {
			if j := st.Purges[s.PurgeID]; j != nil && j.State != PurgeDone {
				return conflict("deleted_id", "stream %s of camera %s is still being purged; retry once GET /v1/purges/%s says done", sid, c.ID, j.ID)
			}
		}
	}
	r := &retiredCamera{Camera: c.Camera}
	r.Camera.Streams = slices.Clone(c.Streams)
	for _, sid := range c.Streams {
		if s := st.Streams[sid]; s != nil && s.Stream.Camera == c.ID && s.Stream.DeletedAt != nil {
			r.Streams = append(r.Streams, s)
			delete(st.Streams, sid)
		}
	}
	st.Retired = append(st.Retired, r)
	delete(st.Cameras, c.ID)
	return nil
}

// AccountDeleteResult is the result of DeleteAccount: the purge of every
// camera the sub-account had.
type AccountDeleteResult struct {
	Account   string            `json:"account"`
	DeletedAt time.Time         `json:"deleted_at"`
	Purges    map[string]string `json:"purges"` // camera → purge id
}

// deleteAccount deletes a sub-account's cameras (each with its own purge)
// and marks the account deleted. Its cameras' video is freed by those purge
// jobs; the account, its bridges, cameras and streams stay in the state for
// billing but answer ErrNotFound from then on.
func (st *state) deleteAccount(at time.Time, id, nonce string, legacy bool) (any, error) {
	a := st.liveAccount(id)
	if legacy {
		a = st.Accounts[id] // deleting again succeeded, with the first time
	}
	if a == nil {
		// A retry of the deletion is answered from the recent-request
		// table; anything else finds nothing, as for every deleted account.
		return nil, notFound("account %s not found", id)
	}
	if a.Parent == "" {
		return nil, invalid("not_sub_account", "account %s is a reseller; only sub-accounts can be deleted", id)
	}
	res := AccountDeleteResult{Account: id, Purges: map[string]string{}}
	ids := make([]string, 0)
	for cid, c := range st.Cameras {
		if c.Account == id {
			ids = append(ids, cid)
		}
	}
	sort.Strings(ids) // map order must not decide anything in Apply
	for _, cid := range ids {
		c := st.Cameras[cid]
		if c.DeletedAt == nil {
			if nonce == "" {
				return nil, invalid("malformed_command", "delete_account without a purge nonce")
			}
			// One purge per camera, named from the proposer's nonce.
			if _, err := st.deleteCamera(at, cid, "purge-"+specOf(nonce + "/" + cid)[:32]); err != nil {
				return nil, err
			}
		}
		res.Purges[cid] = c.PurgeID
	}
	if a.DeletedAt == nil {
		t := at
		a.DeletedAt = &t
	}
	res.DeletedAt = *a.DeletedAt
	return res, nil
}

// StreamDeleteResult is the result of DeleteStream.
type StreamDeleteResult struct {
	Stream    string    `json:"stream"`
	Camera    string    `json:"camera"`
	PurgeID   string    `json:"purge"`
	DeletedAt time.Time `json:"deleted_at"`
}

// deleteStream deletes one stream of a live camera, with a purge job for
// that stream alone. Deleting it again, or a stream whose camera was
// deleted, returns the purge that frees it.
func (st *state) deleteStream(at time.Time, id, purgeID string) (any, error) {
	s := st.Streams[id]
	if s == nil {
		return nil, notFound("stream %s not found", id)
	}
	if s.Stream.DeletedAt != nil {
		pid := s.PurgeID
		if c := st.Cameras[s.Stream.Camera]; pid == "" && c != nil {
			pid = c.PurgeID
		}
		return StreamDeleteResult{Stream: id, Camera: s.Stream.Camera, PurgeID: pid, DeletedAt: *s.Stream.DeletedAt}, nil
	}
	if !storage.ValidID(purgeID) {
		return nil, invalid("malformed_command", "delete_stream without a purge id")
	}
	t := at
	s.Stream.DeletedAt, s.PurgeID = &t, purgeID
	st.Purges[purgeID] = &PurgeJob{
		ID: purgeID, Camera: s.Stream.Camera, Account: s.Stream.Account, Streams: []string{id}, Stream: id,
		State: PurgePending, CreatedAt: at, UpdatedAt: at,
	}
	return StreamDeleteResult{Stream: id, Camera: s.Stream.Camera, PurgeID: purgeID, DeletedAt: t}, nil
}

// --- reads and writes ---

// Purge returns a purge job; ErrNotFound when unknown.
func (m *Meter) Purge(ctx context.Context, id string) (PurgeJob, error) {
	m.fsm.mu.RLock()
	defer m.fsm.mu.RUnlock()
	j := m.fsm.st.Purges[id]
	if j == nil {
		return PurgeJob{}, fmt.Errorf("meter: purge %s: %w", id, ErrNotFound)
	}
	return clonePurge(j), nil
}

// OpenPurges returns the purge jobs not done yet, oldest first.
func (m *Meter) OpenPurges(ctx context.Context) ([]PurgeJob, error) {
	m.fsm.mu.RLock()
	defer m.fsm.mu.RUnlock()
	var out []PurgeJob
	for _, j := range m.fsm.st.Purges {
		if j.State != PurgeDone {
			out = append(out, clonePurge(j))
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
func (m *Meter) PurgeProgress(ctx context.Context, id, cursor string, objects, bytes int64) (PurgeJob, error) {
	var r PurgeJob
	return r, m.propose(ctx, cmdPurgeProgress, "purge/"+id+"/"+cursor, "",
		purgeProgress{ID: id, Cursor: cursor, Objects: objects, Bytes: bytes}, &r)
}

// PurgeFailed records that the job hit an error; the worker keeps retrying
// and the next progress sets it running again.
func (m *Meter) PurgeFailed(ctx context.Context, id, msg string) (PurgeJob, error) {
	var r PurgeJob
	return r, m.propose(ctx, cmdPurgeProgress, "", "", purgeProgress{ID: id, Error: msg}, &r)
}

// PurgeDone marks a purge finished: storage and index hold nothing of the
// camera. Its id can then be created again.
func (m *Meter) PurgeDone(ctx context.Context, id string) (PurgeJob, error) {
	var r PurgeJob
	return r, m.propose(ctx, cmdPurgeDone, "purge-done/"+id, "", purgeDone{ID: id}, &r)
}

// DeleteStream marks one stream deleted at the proposer's time (it stays
// in the meter for billing) and names the purge job that frees its video.
func (m *Meter) DeleteStream(ctx context.Context, requestID, id string) (StreamDeleteResult, error) {
	var r StreamDeleteResult
	return r, m.propose(ctx, cmdDeleteStream, requestID, "purge-"+randomID(), deleteStream{ID: id}, &r)
}

// DeleteAccount deletes a sub-account and every camera in it; each camera
// gets a purge job.
func (m *Meter) DeleteAccount(ctx context.Context, requestID, id string) (AccountDeleteResult, error) {
	var r AccountDeleteResult
	return r, m.propose(ctx, cmdDeleteAccount, requestID, randomID(), deleteAccount{ID: id}, &r)
}

// --- HTTP ---

func (m *Meter) handleGetPurge(w http.ResponseWriter, r *http.Request, id string) {
	j, err := m.Purge(r.Context(), id)
	if err != nil {
		m.writeErr(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{
		"id": j.ID, "state": j.State, "camera": j.Camera,
		"objects_deleted": j.ObjectsDeleted, "bytes_freed": j.BytesFreed,
		"error": j.Error, "created_at": j.CreatedAt, "done_at": j.DoneAt,
	})
}

func (m *Meter) handleDeleteStream(w http.ResponseWriter, r *http.Request, id string) {
	_, rid, ok := readBody(w, r, true)
	if !ok {
		return
	}
	res, err := m.DeleteStream(r.Context(), rid, id)
	if err != nil {
		m.writeErr(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusAccepted, res)
}

func (m *Meter) handleDeleteAccount(w http.ResponseWriter, r *http.Request, id string) {
	_, rid, ok := readBody(w, r, true)
	if !ok {
		return
	}
	res, err := m.DeleteAccount(r.Context(), rid, id)
	if err != nil {
		m.writeErr(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusAccepted, res)
}
