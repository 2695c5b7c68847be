package main

import (
	"context"
	"errors"
	"flag"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/internal/connlimit"
	"github.com/vigilcloud/vigil/meter"
)

// TestPingWithinAbandonsAHungCheck: a check that ignores its context (a
// client library blocked in a syscall) still fails at the deadline.
func TestPingWithinAbandonsAHungCheck(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	err := pingWithin(context.Background(), 50*time.Millisecond, func(context.Context) error {
		<-release
		return nil
	})
	if err == nil {
		t.Fatal("a hung check passed")
	}
	if err := pingWithin(context.Background(), time.Second, func(context.Context) error { return nil }); err != nil {
		t.Fatalf("a healthy check failed: %v", err)
	}
	boom := errors.New("boom")
	if err := pingWithin(context.Background(), time.Second, func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("got %v, want the check's error", err)
	}
}

// TestGuardFlagDefaults: with no flags set, the node gets the defaults
// README's configuration table promises, which are the packages' own.
func TestGuardFlagDefaults(t *testing.T) {
	var c nodeConfig
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	c.register(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string][2]any{
		"--auth-failure-burst":          {c.AuthFailureBurst, 10},
		"--auth-failure-identity-burst": {c.AuthIdentityBurst, 50},
		"--auth-failure-refill":         {c.AuthFailureRefill, 6 * time.Second},
		"--usage-resolve-max":           {c.UsageResolveMax, 1000},
		"--http-max-conns":              {c.Guard.MaxConns, 0},
		"--http-max-conns-per-ip":       {c.Guard.MaxConnsPerIP, 256},
		"--http-header-timeout":         {c.Guard.HeaderTimeout, 10 * time.Second},
		"--http-idle-timeout":           {c.Guard.IdleTimeout, 60 * time.Second},
		"--storage-timeout":             {c.Guard.StorageTimeout, 10 * time.Second},
		"--index-timeout":               {c.Guard.IndexTimeout, 5 * time.Second},
		"--readyz-timeout":              {c.Guard.ReadyTimeout, 2 * time.Second},
	} {
		if got[0] != got[1] {
			t.Errorf("%s defaults to %v, README promises %v", name, got[0], got[1])
		}
	}
	// The packages give the same when their config is left zero.
	if auth.DefaultBurst != c.AuthFailureBurst || auth.DefaultIdentityBurst != c.AuthIdentityBurst || auth.DefaultRefill != c.AuthFailureRefill {
		t.Error("auth.LimitConfig's defaults differ from the flags'")
	}
	if meter.DefaultResolveMax != c.UsageResolveMax {
		t.Error("meter.AggregatorConfig's ResolveMax default differs from the flag's")
	}
	if connlimit.DefaultMaxConnsPerIP != c.Guard.MaxConnsPerIP || c.Guard.maxConns() != connlimit.DefaultMaxConns() {
		t.Error("connlimit's defaults differ from the flags'")
	}
}
