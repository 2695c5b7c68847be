package index

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/storage"
)

// StreamLister names the streams whose index can be rebuilt.
type StreamLister interface {
	StreamRefs(ctx context.Context) ([]storage.StreamRef, error)
}

// RebuildHandler serves POST /v1/index/rebuild[?stream=ID]: it rebuilds the
// index of every listed stream (or of one) from storage alone. The caller
// mounts it behind the operator check.
func RebuildHandler(idx Index, streams StreamLister, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refs, err := streams.StreamRefs(r.Context())
		if err != nil {
			httpx.WriteError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
			return
		}
		if one := r.URL.Query().Get("stream"); one != "" {
			var found []storage.StreamRef
			for _, ref := range refs {
				if ref.Stream == one {
					found = append(found, ref)
				}
			}
			if len(found) == 0 {
				httpx.WriteError(w, http.StatusNotFound, "unknown_stream", "no such stream: "+one)
				return
			}
			refs = found
		}
		began := time.Now()
		for _, ref := range refs {
			if err := idx.Rebuild(r.Context(), ref); err != nil {
				status := http.StatusInternalServerError
				if errors.Is(err, ErrUnavailable) || errors.Is(err, storage.ErrUnavailable) {
					status = http.StatusServiceUnavailable
				}
				httpx.WriteError(w, status, "rebuild_failed", ref.Stream+": "+err.Error())
				return
			}
			log.Info("index: rebuilt", "stream", ref.Stream)
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"streams": len(refs), "took_ms": time.Since(began).Milliseconds()})
	})
}
