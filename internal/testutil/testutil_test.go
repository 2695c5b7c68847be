package testutil

import (
	"context"
	"flag"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestServers checks that the real servers start, answer, stop and restart.
func TestServers(t *testing.T) {
	ctx := context.Background()
	r := StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rc.Close()
	if err := rc.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	if err := rc.Ping(ctx).Err(); err == nil {
		t.Fatal("redis answers after Stop")
	}
	r.Start()
	if v, err := rc.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("after restart: %q, %v (appendfsync always should keep it)", v, err)
	}

	m := StartMinIO(t)
	b := m.Bucket(t)
	if ok, err := m.Client().BucketExists(ctx, b); err != nil || !ok {
		t.Fatalf("bucket %s: %v %v", b, ok, err)
	}
	m.Stop()
	m.Start()
	if ok, err := m.Client().BucketExists(ctx, b); err != nil || !ok {
		t.Fatalf("bucket %s after restart: %v %v", b, ok, err)
	}
}

// TestShortWinsOverRequireIntegration: -short skips a test that needs a
// binary even under VIGIL_REQUIRE_INTEGRATION=1, where a missing binary
// would otherwise fail it.
func TestShortWinsOverRequireIntegration(t *testing.T) {
	t.Setenv("VIGIL_REQUIRE_INTEGRATION", "1")
	for _, short := range []bool{false, true} {
		was := flag.Lookup("test.short").Value.String()
		if err := flag.Set("test.short", strconv.FormatBool(short)); err != nil {
			t.Fatal(err)
		}
		r := &recordTB{TB: t}
		r.run(func() { RequireBinary(r, "vigil-no-such-binary") })
		if err := flag.Set("test.short", was); err != nil {
			t.Fatal(err)
		}
		if want := map[bool]string{false: "fatal", true: "skip"}[short]; r.ended != want {
			t.Errorf("short=%v: RequireBinary of a missing binary ended in %q, want %q", short, r.ended, want)
		}
	}
}

// recordTB records whether a helper skipped or failed, instead of doing it.
type recordTB struct {
	testing.TB
	ended string
}

type endTest struct{}

func (r *recordTB) Helper()               {}
func (r *recordTB) Skip(...any)           { r.ended = "skip"; panic(endTest{}) }
func (r *recordTB) Skipf(string, ...any)  { r.ended = "skip"; panic(endTest{}) }
func (r *recordTB) Fatal(...any)          { r.ended = "fatal"; panic(endTest{}) }
func (r *recordTB) Fatalf(string, ...any) { r.ended = "fatal"; panic(endTest{}) }
func (r *recordTB) run(f func()) {
	defer func() {
		if p := recover(); p != nil {
			if _, ok := p.(endTest); !ok {
				panic(p)
			}
		}
	}()
	f()
}
