package health

import (
	"errors"
	"net/http"
	"time"

	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/storage"
)

// Pattern is the route of the health report.
const Pattern = "GET /v1/accounts/{id}/health"

// MaxWindow bounds how far back ?since= may list gaps.
const MaxWindow = 31 * 24 * time.Hour

// Allow authorizes a request for the health of account; an error refuses
// it with 403. It is the one place access control plugs in.
type Allow func(r *http.Request, account string) error

// Handler serves Pattern: the Report of {id}, with gaps since ?since=
// (Unix ms or RFC 3339; default Config.GapWindow ago). A nil allow refuses
// everything.
func Handler(c *Checker, allow Allow) http.Handler {
	return http.HandlerFunc(cluster.WithID(func(w http.ResponseWriter, r *http.Request, id string) {
		if allow == nil {
			httpx.WriteError(w, http.StatusForbidden, "forbidden", "health: no access")
			return
		}
		if err := allow(r, id); err != nil {
			httpx.WriteError(w, http.StatusForbidden, "forbidden", err.Error())
			return
		}
		var since int64
		if s := r.URL.Query().Get("since"); s != "" {
			var err error
			since, err = httpx.ParseTime(s)
			now := c.cfg.Now().UnixMilli()
			switch {
			case err != nil:
				httpx.WriteError(w, http.StatusBadRequest, "invalid_since", "since: "+err.Error())
				return
			case since >= now || now-since > MaxWindow.Milliseconds():
				httpx.WriteError(w, http.StatusBadRequest, "invalid_since", "since must lie in the last "+MaxWindow.String())
				return
			}
		}
		rep, err := c.Report(r.Context(), id, since)
		switch {
		case err == nil:
			httpx.WriteJSON(w, http.StatusOK, rep)
		case errors.Is(err, ErrNotFound):
			httpx.WriteError(w, http.StatusNotFound, "unknown_account", "no such account: "+id)
		case errors.Is(err, index.ErrUnavailable), errors.Is(err, storage.ErrUnavailable):
			w.Header().Set("Retry-After", "1")
			httpx.WriteError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		default:
			c.cfg.Logger.Error("health: report failed", "account", id, "err", err)
			httpx.WriteError(w, http.StatusInternalServerError, "internal", "internal error")
		}
	}))
}
