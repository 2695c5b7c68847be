package playback

import (
	"net/http"

	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/storage"
)

func (h *Handler) clip(w http.ResponseWriter, r *http.Request, ref storage.StreamRef) {
	httpx.WriteError(w, http.StatusNotImplemented, "not_implemented", "clip export is not built yet")
}
