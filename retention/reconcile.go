package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/storage"
)

// Drift is one stream's stored bytes as the meter counts them against the
// sum of its segment object sizes in storage.
type Drift struct {
	Stream         string `json:"stream"`
	MeterBytes     int64  `json:"meter_bytes"`
	StorageBytes   int64  `json:"storage_bytes"`
	MeterObjects   int64  `json:"meter_objects"`
	StorageObjects int64  `json:"storage_objects"`
	DriftBytes     int64  `json:"drift_bytes"` // storage − meter
	DriftObjects   int64  `json:"drift_objects"`
	Fixed          bool   `json:"fixed"`
}

// Reconciler compares and fixes the meter's stored bytes per stream.
type Reconciler struct {
	Store   storage.Backend
	Streams Streams
	Usage   MeterUsage // the node's, so its own deltas are flushed before a measure
	// Settle is how long a drift must persist, unchanged, before it is
	// fixed: ingest reports usage in batches about once a second, so a
	// segment just stored may not be counted yet (default 3s).
	Settle time.Duration
	Log    *slog.Logger
}

// Reconcile checks every live stream (or only stream, when set) and, with
// fix, corrects the meter's counters by a usage adjustment (through the
// node's Aggregator, committed before it returns) so they equal what
// storage holds.
func (r *Reconciler) Reconcile(ctx context.Context, stream string, fix bool) ([]Drift, error) {
	// What this node's Aggregator holds (a sweep's frees) counts as
	// reported: flushed first, so it is not measured as drift.
	if err := r.Usage.Flush(ctx); err != nil {
		if fix {
			return nil, err
		}
		if r.Log != nil {
			r.Log.Warn("reconcile: this node's usage not flushed; measuring anyway", "err", err)
		}
	}
	list, err := r.Streams.Streams(ctx)
	if err != nil {
		return nil, err
	}
	settle := r.Settle
	if settle <= 0 {
		settle = 3 * time.Second
	}
	var out []Drift
	found := false
	for _, s := range list {
		if stream != "" && s.ID != stream {
			continue
		}
		found = true
		ref := storage.StreamRef{Account: s.Account, Camera: s.Camera, Stream: s.ID}
		d, err := r.measure(ctx, ref)
		if err != nil {
			return out, err
		}
		if fix && (d.DriftBytes != 0 || d.DriftObjects != 0) {
			// Measure again after the usage batches in flight landed;
			// only a drift that stays the same is real.
			select {
			case <-ctx.Done():
				return out, ctx.Err()
			case <-time.After(settle):
			}
			// An adjustment this node queued before (a fix whose
			// commit failed) lands now, and shows as a changed drift.
			if err := r.Usage.Flush(ctx); err != nil {
				return out, err
			}
			d2, err := r.measure(ctx, ref)
			if err != nil {
				return out, err
			}
			if d2.DriftBytes == d.DriftBytes && d2.DriftObjects == d.DriftObjects {
				if err := r.Usage.Adjust(ctx, s.ID, d.DriftBytes, d.DriftObjects); err != nil {
					return out, fmt.Errorf("retention: fix usage of %s: %w", s.ID, err)
				}
				d2.Fixed = true
				if r.Log != nil {
					r.Log.Warn("reconcile: fixed stored-bytes drift", "stream", s.ID, "drift_bytes", d.DriftBytes, "drift_objects", d.DriftObjects)
				}
			}
			d = d2
		}
		out = append(out, d)
	}
	if stream != "" && !found {
		return nil, fmt.Errorf("retention: reconcile: stream %s: %w", stream, meter.ErrNotFound)
	}
	return out, nil
}

// measure reads the meter, sums storage, and reads the meter again until
// both reads agree (nothing was reported meanwhile).
func (r *Reconciler) measure(ctx context.Context, ref storage.StreamRef) (Drift, error) {
	for attempt := 0; ; attempt++ {
		u1, err := r.Usage.StreamUsage(ctx, ref.Stream)
		if err != nil {
			return Drift{}, err
		}
		d := Drift{Stream: ref.Stream, MeterBytes: u1.StorageBytes, MeterObjects: u1.StoredObjects}
		if err := storage.Walk(ctx, r.Store, ref.SegmentPrefix(), func(o storage.ObjectInfo) error {
			d.StorageBytes += o.Size
			d.StorageObjects++
			return nil
		}); err != nil {
			return Drift{}, fmt.Errorf("retention: reconcile %s: %w", ref.Stream, err)
		}
		u2, err := r.Usage.StreamUsage(ctx, ref.Stream)
		if err != nil {
			return Drift{}, err
		}
		if (u1.StorageBytes == u2.StorageBytes && u1.StoredObjects == u2.StoredObjects) || attempt == 4 {
			d.DriftBytes, d.DriftObjects = d.StorageBytes-d.MeterBytes, d.StorageObjects-d.MeterObjects
			return d, nil
		}
	}
}

// Handler serves POST /v1/meter/reconcile[?stream=ID][&dry_run=1] for the
// operator (mount it behind auth.RequireOperator).
func (r *Reconciler) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		stream := q.Get("stream")
		if stream != "" && !storage.ValidID(stream) {
			httpx.WriteError(w, http.StatusBadRequest, "invalid_id", "ids are [a-zA-Z0-9_-]{1,64}")
			return
		}
		dry, _ := strconv.ParseBool(q.Get("dry_run"))
		drifts, err := r.Reconcile(req.Context(), stream, !dry)
		switch {
		case errors.Is(err, meter.ErrNotFound):
			httpx.WriteError(w, http.StatusNotFound, "unknown_stream", err.Error())
			return
		case err != nil:
			httpx.WriteError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
			return
		}
		drifted := 0
		for _, d := range drifts {
			if d.DriftBytes != 0 || d.DriftObjects != 0 {
				drifted++
			}
		}
		if drifts == nil {
			drifts = []Drift{}
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"streams": len(drifts), "drifted": drifted, "dry_run": dry, "drifts": drifts})
	})
}
