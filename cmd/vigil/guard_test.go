package main

import (
	"context"
	"errors"
	"testing"
	"time"
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
