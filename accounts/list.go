package accounts

import (
	"encoding/base64"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/storage"
)

// ConsolePatterns are the http.ServeMux patterns ConsoleHandler serves.
func ConsolePatterns() []string {
	return []string{
		"GET /v1/accounts",
		"GET /v1/accounts/{id}/bridges",
		"GET /v1/bridges/{id}",
		"GET /v1/bridges/{id}/cameras",
		"GET /v1/cameras/{id}",
		"DELETE /v1/bridges/{id}",
		"POST /v1/bridges/{id}/token",
	}
}

// ConsoleHandler serves what a console needs to manage accounts in the
// caller's scope: paged lists and reads (Read on the account), bridge
// deletion and token rotation (Admin on the bridge's account). Mount it
// behind auth.Middleware.
//
// Lists are ordered by id and hold no deleted objects; `limit` is 1..1000
// (default 100), and `next_cursor`, present when more follow, is the
// `cursor` of the next page. An unknown or deleted id is 404 before any
// scope check, because the scope is that object's account.
func (reg *Registry) ConsoleHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/accounts", reg.handleListAccounts)
	mux.HandleFunc("GET /v1/accounts/{id}/bridges", cluster.WithID(reg.handleListBridges))
	mux.HandleFunc("GET /v1/bridges/{id}", cluster.WithID(reg.handleGetBridge))
	mux.HandleFunc("GET /v1/bridges/{id}/cameras", cluster.WithID(reg.handleListCameras))
	mux.HandleFunc("GET /v1/cameras/{id}", cluster.WithID(reg.handleGetCamera))
	mux.HandleFunc("DELETE /v1/bridges/{id}", cluster.WithID(reg.handleDeleteBridge))
	mux.HandleFunc("POST /v1/bridges/{id}/token", cluster.WithID(reg.handleRotateBridgeToken))
	return mux
}

// consoleError answers err: 403 for ErrForbidden, else as cluster does.
func (reg *Registry) consoleError(w http.ResponseWriter, r *http.Request, err error) {
	if !WriteForbidden(w, err) {
		cluster.WriteError(w, r, reg.log, err)
	}
}

// Paging.
const (
	defaultPageLimit = 100
	maxPageLimit     = 1000
)

// page is a list request: at most limit items whose ids sort after after.
type page struct {
	limit int
	after string
}

// readPage parses limit and cursor; on failure it has written the 400.
func readPage(w http.ResponseWriter, r *http.Request) (page, bool) {
	pg := page{limit: defaultPageLimit}
	q := r.URL.Query()
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageLimit {
			httpx.WriteError(w, http.StatusBadRequest, "invalid_limit", "limit is 1 to 1000")
			return page{}, false
		}
		pg.limit = n
	}
	if v := q.Get("cursor"); v != "" {
		// Opaque to clients: the last id of the page before, so a page
		// stays right when objects are added or deleted in between.
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil || !storage.ValidID(string(b)) {
			httpx.WriteError(w, http.StatusBadRequest, "invalid_cursor", "malformed cursor")
			return page{}, false
		}
		pg.after = string(b)
	}
	return pg, true
}

// cut sorts ids and returns the page's, with the cursor of the next page
// ("" when none follow).
func (pg page) cut(ids []string) ([]string, string) {
	slices.Sort(ids)
	i, _ := slices.BinarySearch(ids, pg.after)
	if i < len(ids) && ids[i] == pg.after {
		i++
	}
	ids = ids[i:]
	if len(ids) <= pg.limit {
		return ids, ""
	}
	ids = ids[:pg.limit]
	return ids, base64.RawURLEncoding.EncodeToString([]byte(ids[len(ids)-1]))
}

func writePage(w http.ResponseWriter, key string, items any, next string) {
	out := map[string]any{key: items}
	if next != "" {
		out["next_cursor"] = next
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

// handleListAccounts lists the live accounts p reaches: every one for the
// operator; a user's own and, for a reseller's user, its sub-accounts.
func (reg *Registry) handleListAccounts(w http.ResponseWriter, r *http.Request) {
	p := auth.FromContext(r.Context())
	if err := reg.Allowed(p, p.Account, Read); err != nil { // bridges and billing: 403
		reg.consoleError(w, r, err)
		return
	}
	pg, ok := readPage(w, r)
	if !ok {
		return
	}
	reg.st.m.RLock()
	var ids []string
	for id, a := range reg.st.Accounts {
		if a.DeletedAt == nil && (p.Kind == auth.Operator || reg.st.reaches(p.Account, id)) {
			ids = append(ids, id)
		}
	}
	ids, next := pg.cut(ids)
	out := make([]Account, 0, len(ids))
	for _, id := range ids {
		out = append(out, cloneAccount(reg.st.Accounts[id].Account))
	}
	reg.st.m.RUnlock()
	writePage(w, "accounts", out, next)
}

func cloneAccount(a Account) Account {
	if a.PrivacySuspendedUntil != nil {
		t := *a.PrivacySuspendedUntil
		a.PrivacySuspendedUntil = &t
	}
	return a
}

// BridgeInfo is a bridge as the console reads it: during a rotation's
// grace, when its previous token stops working.
type BridgeInfo struct {
	Bridge
	PreviousTokenValidUntil *time.Time `json:"previous_token_valid_until,omitempty"`
}

// bridgeInfo describes b (the caller holds the lock).
func (reg *Registry) bridgeInfo(b *bridgeRec, now time.Time) BridgeInfo {
	out := BridgeInfo{Bridge: b.Bridge}
	if b.Prev.valid(now) {
		t := b.Prev.Until
		out.PreviousTokenValidUntil = &t
	}
	return out
}

func (reg *Registry) handleListBridges(w http.ResponseWriter, r *http.Request, account string) {
	if _, err := reg.Account(r.Context(), account); err != nil {
		reg.consoleError(w, r, err)
		return
	}
	if err := reg.Allowed(auth.FromContext(r.Context()), account, Read); err != nil {
		reg.consoleError(w, r, err)
		return
	}
	pg, ok := readPage(w, r)
	if !ok {
		return
	}
	now := reg.now()
	reg.st.m.RLock()
	var ids []string
	for id, b := range reg.st.Bridges {
		if b.Account == account && b.DeletedAt == nil {
			ids = append(ids, id)
		}
	}
	ids, next := pg.cut(ids)
	out := make([]BridgeInfo, 0, len(ids))
	for _, id := range ids {
		out = append(out, reg.bridgeInfo(reg.st.Bridges[id], now))
	}
	reg.st.m.RUnlock()
	writePage(w, "bridges", out, next)
}

// scopedBridge returns live bridge id if p has need on its account.
func (reg *Registry) scopedBridge(r *http.Request, id string, need Need) (Bridge, error) {
	b, err := reg.Bridge(r.Context(), id)
	if err != nil {
		return Bridge{}, err
	}
	return b, reg.Allowed(auth.FromContext(r.Context()), b.Account, need)
}

func (reg *Registry) handleGetBridge(w http.ResponseWriter, r *http.Request, id string) {
	if _, err := reg.scopedBridge(r, id, Read); err != nil {
		reg.consoleError(w, r, err)
		return
	}
	now := reg.now()
	reg.st.m.RLock()
	b := reg.st.Bridges[id]
	var out BridgeInfo
	if b != nil {
		out = reg.bridgeInfo(b, now)
	}
	reg.st.m.RUnlock()
	if b == nil { // deleted in between: it never comes back
		cluster.WriteError(w, r, reg.log, cluster.NotFound("bridge %s not found", id))
		return
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (reg *Registry) handleListCameras(w http.ResponseWriter, r *http.Request, bridge string) {
	if _, err := reg.scopedBridge(r, bridge, Read); err != nil {
		reg.consoleError(w, r, err)
		return
	}
	pg, ok := readPage(w, r)
	if !ok {
		return
	}
	reg.st.m.RLock()
	var ids []string
	for id, c := range reg.st.Cameras {
		if c.Bridge == bridge && c.DeletedAt == nil {
			ids = append(ids, id)
		}
	}
	ids, next := pg.cut(ids)
	out := make([]Camera, 0, len(ids))
	for _, id := range ids {
		out = append(out, reg.st.liveCamera(reg.st.Cameras[id]).Camera)
	}
	reg.st.m.RUnlock()
	writePage(w, "cameras", out, next)
}

// liveCamera is c with only its live streams (the caller holds the lock).
func (st *State) liveCamera(c *cameraRec) CameraResult {
	out := CameraResult{Camera: c.Camera, Streams: []Stream{}}
	out.Camera.Streams = []string{}
	for _, sid := range c.Streams {
		if s := st.Streams[sid]; s != nil && s.Stream.DeletedAt == nil {
			out.Camera.Streams = append(out.Camera.Streams, sid)
			out.Streams = append(out.Streams, cloneStream(s.Stream))
		}
	}
	return out
}

// handleGetCamera answers {"camera", "streams"}: the camera and its live
// streams.
func (reg *Registry) handleGetCamera(w http.ResponseWriter, r *http.Request, id string) {
	c, err := reg.Camera(r.Context(), id)
	if err == nil {
		err = reg.Allowed(auth.FromContext(r.Context()), c.Account, Read)
	}
	if err != nil {
		reg.consoleError(w, r, err)
		return
	}
	reg.st.m.RLock()
	rec := reg.st.Cameras[id]
	var out CameraResult
	if rec != nil && rec.DeletedAt == nil {
		out = reg.st.liveCamera(rec)
	}
	reg.st.m.RUnlock()
	if out.Camera.ID == "" { // deleted in between
		cluster.WriteError(w, r, reg.log, cluster.NotFound("camera %s not found", id))
		return
	}
	httpx.WriteJSON(w, http.StatusOK, struct {
		Camera  Camera   `json:"camera"`
		Streams []Stream `json:"streams"`
	}{out.Camera, out.Streams})
}

// handleDeleteBridge: 200 {"bridge","deleted_at"}; 409 bridge_has_cameras
// while it has live cameras. Deleting a deleted bridge answers the first
// deletion, as for cameras, so it is authorized on the bridge's record.
func (reg *Registry) handleDeleteBridge(w http.ResponseWriter, r *http.Request, id string) {
	reg.st.m.RLock()
	b := reg.st.Bridges[id]
	account := ""
	if b != nil {
		account = b.Account
	}
	reg.st.m.RUnlock()
	if b == nil {
		cluster.WriteError(w, r, reg.log, cluster.NotFound("bridge %s not found", id))
		return
	}
	if err := reg.Allowed(auth.FromContext(r.Context()), account, Admin); err != nil {
		reg.consoleError(w, r, err)
		return
	}
	_, rid, ok := cluster.ReadBody(w, r, true)
	if !ok {
		return
	}
	res, err := reg.DeleteBridge(r.Context(), rid, auth.FromContext(r.Context()), id)
	if err != nil {
		reg.consoleError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, res)
}

// handleRotateBridgeToken: 201 {"bridge","token","rotated_at",
// "previous_valid_until"} with the new token, once; a retried request
// (same body or Idempotency-Key within 24 h) is 200 without a token.
func (reg *Registry) handleRotateBridgeToken(w http.ResponseWriter, r *http.Request, id string) {
	if _, err := reg.scopedBridge(r, id, Admin); err != nil {
		reg.consoleError(w, r, err)
		return
	}
	body, rid, ok := cluster.ReadBody(w, r, true)
	if !ok {
		return
	}
	var in struct {
		GraceSeconds *int64 `json:"grace_seconds"`
	}
	if len(body) > 0 && !cluster.DecodeJSON(w, body, &in) {
		return
	}
	grace := DefaultTokenGrace
	if in.GraceSeconds != nil {
		if *in.GraceSeconds < 0 || *in.GraceSeconds > int64(MaxTokenGrace/time.Second) {
			httpx.WriteError(w, http.StatusBadRequest, "invalid_grace", "grace_seconds is 0 to 604800")
			return
		}
		grace = time.Duration(*in.GraceSeconds) * time.Second
	}
	res, err := reg.RotateBridgeToken(r.Context(), rid, auth.FromContext(r.Context()), id, grace)
	if err != nil {
		reg.consoleError(w, r, err)
		return
	}
	httpx.WriteJSON(w, cluster.CreatedStatus(res.Rotated), struct {
		Bridge             string     `json:"bridge"`
		Token              string     `json:"token,omitempty"`
		RotatedAt          time.Time  `json:"rotated_at"`
		PreviousValidUntil *time.Time `json:"previous_valid_until,omitempty"`
	}{res.Bridge, res.Token, res.RotatedAt, res.PreviousValidUntil})
}
