package main

import (
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/health"
)

// healthFlags configure GET /v1/accounts/{id}/health and its metric.
type healthFlags struct {
	OfflineAfter time.Duration
}

func (h *healthFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&h.OfflineAfter, "health-offline-after", 5*time.Minute, "a stream whose last segment ended longer ago than this is offline rather than stalled (GET /v1/accounts/{id}/health, vigil_stream_health)")
}

func (h *healthFlags) validate() error {
	if h.OfflineAfter <= 0 {
		return errors.New("--health-offline-after must be positive")
	}
	return nil
}

// healthHandler builds the account health report over the registry and the
// index, registers its metric and returns its handler.
func healthHandler(reg health.Registry, idx health.Index, f healthFlags, pr prometheus.Registerer, log *slog.Logger) http.Handler {
	c := health.New(reg, idx, health.Config{OfflineAfter: f.OfflineAfter, Logger: log})
	health.NewMetrics(c, pr, 0)
	return health.Handler(c, healthAllow)
}

// healthAllow lets only the operator read an account's health until scoped
// access control replaces this one function.
func healthAllow(r *http.Request, account string) error {
	if auth.FromContext(r.Context()).Kind != auth.Operator {
		return errors.New("operator token required")
	}
	return nil
}
