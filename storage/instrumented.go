package storage

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Instrument wraps b so that every operation is timed into
// vigil_storage_operation_duration_seconds{op, result}. Instrumenting
// several backends with one registerer shares the metric.
func Instrument(b Backend, reg prometheus.Registerer) Backend {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "vigil_storage_operation_duration_seconds",
		Help:    "Latency of object storage operations by operation and result.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"op", "result"})
	if reg != nil {
		if err := reg.Register(h); err != nil {
			are := &prometheus.AlreadyRegisteredError{}
			if !errors.As(err, are) {
				panic(err) // a conflicting definition is a programming error
			}
			h = are.ExistingCollector.(*prometheus.HistogramVec)
		}
	}
	// Errors are exported at 0 from the start, so that an alert on their
	// rate sees the first one.
	for _, op := range []string{"put", "get", "stat", "list", "delete", "ping"} {
		h.WithLabelValues(op, "error")
	}
	return &instrumented{b: b, h: h}
}

type instrumented struct {
	b Backend
	h *prometheus.HistogramVec
}

var _ Backend = (*instrumented)(nil)

func (i *instrumented) observe(op string, start time.Time, err error) {
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(err, ErrExists):
		result = "exists"
	case errors.Is(err, fs.ErrNotExist):
		result = "not_found"
	case errors.Is(err, context.Canceled):
		result = "canceled"
	default:
		result = "error"
	}
	i.h.WithLabelValues(op, result).Observe(time.Since(start).Seconds())
}

func (i *instrumented) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (ObjectInfo, error) {
	start := time.Now()
	info, err := i.b.Put(ctx, key, r, size, opts)
	i.observe("put", start, err)
	return info, err
}

// Get times until the object starts to arrive, not the whole read.
func (i *instrumented) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, ObjectInfo, error) {
	start := time.Now()
	rc, info, err := i.b.Get(ctx, key, offset, length)
	i.observe("get", start, err)
	return rc, info, err
}

func (i *instrumented) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	start := time.Now()
	info, err := i.b.Stat(ctx, key)
	i.observe("stat", start, err)
	return info, err
}

func (i *instrumented) List(ctx context.Context, prefix, after string, limit int) ([]ObjectInfo, error) {
	start := time.Now()
	objs, err := i.b.List(ctx, prefix, after, limit)
	i.observe("list", start, err)
	return objs, err
}

func (i *instrumented) Delete(ctx context.Context, keys []string) error {
	start := time.Now()
	err := i.b.Delete(ctx, keys)
	i.observe("delete", start, err)
	return err
}

func (i *instrumented) Ping(ctx context.Context) error {
	start := time.Now()
	err := i.b.Ping(ctx)
	i.observe("ping", start, err)
	return err
}
