package main

import (
	"net"
	"testing"
	"time"
)

// FuzzRedisOptions: any --redis-addr either is refused or gives a
// non-empty list of HOST:PORT addresses, and a cluster for several.
func FuzzRedisOptions(f *testing.F) {
	for _, s := range []string{"127.0.0.1:6379", "a:1,b:2,c:3", " a:1 ,, b:2", ",", "", "[::1]:7000", "host", "a:1,host"} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, addrs string, cluster bool) {
		o, err := redisOptions(addrs, cluster, time.Second)
		if err != nil {
			return
		}
		if len(o.Addrs) == 0 {
			t.Fatalf("%q: no address and no error", addrs)
		}
		for _, a := range o.Addrs {
			if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
				t.Fatalf("%q: accepted %q", addrs, a)
			}
		}
		if o.IsClusterMode != cluster {
			t.Fatalf("%q: cluster mode %v, asked %v", addrs, o.IsClusterMode, cluster)
		}
	})
}
