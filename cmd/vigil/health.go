package main

import (
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilcloud/vigil/accounts"
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
func healthHandler(reg *accounts.Registry, idx health.Index, f healthFlags, pr prometheus.Registerer, log *slog.Logger) http.Handler {
	c := health.New(reg, idx, health.Config{OfflineAfter: f.OfflineAfter, Logger: log})
	health.NewMetrics(c, pr, 0)
	return health.Handler(c, func(r *http.Request, account string) error {
		// Health is metadata: visible within scope under privacy mode too.
		return reg.Allowed(auth.FromContext(r.Context()), account, accounts.Read)
	})
}
