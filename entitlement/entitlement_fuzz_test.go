package entitlement_test

import (
	"fmt"
	"testing"

	"github.com/vigilcloud/vigil/entitlement"
	"github.com/vigilcloud/vigil/internal/machinetest"
)

// FuzzProductKind: any string is a SKU, an analytic or a clear refusal,
// never a panic; what passes as a SKU is one billing can produce.
func FuzzProductKind(f *testing.F) {
	for _, s := range []string{"HD1-D30", "SD1-D7", "HD10-D3650", "HD1-D0", "HD1-D3651", "HD7-D30", "people_counting", "", "HD1-D", "-D30", "HD1-D030"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		kind, err := entitlement.ProductKind(p)
		switch {
		case err != nil && kind != "":
			t.Fatalf("%q: kind %q with error %v", p, kind, err)
		case err == nil && kind != entitlement.KindSKU && kind != entitlement.KindAnalytic:
			t.Fatalf("%q: kind %q", p, kind)
		case kind == entitlement.KindSKU && (len(p) < 6 || len(p) > 10):
			t.Fatalf("%q accepted as a SKU", p)
		}
	})
}

// FuzzOperations applies a fuzzed sequence of splits, returns and
// activations (each byte triple one operation) to the four-level tree and
// checks after each that every quantity adds up and no stream subscription
// has two units.
func FuzzOperations(f *testing.F) {
	f.Add([]byte{0, 1, 3, 1, 2, 2, 2, 0, 1, 3, 4, 0, 2, 1, 5})
	f.Add([]byte{0, 0, 9, 1, 0, 9, 2, 0, 0, 2, 0, 1, 3, 0, 0, 3, 1, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 300 {
			return
		}
		h := machinetest.New(t)
		tree(h)
		if _, err := create(h, "root", "d1", "HD1-D30", 8, 6); err != nil {
			t.Fatal(err)
		}
		names := []string{"root"}
		owners := map[string]string{"root": "d1"}
		below := map[string][]string{"d1": {"r1"}, "r1": {"s1", "s2"}}
		streams := map[string][]string{"s1": {"hd1a", "hd1b", "hd2"}, "s2": {"s2a"}}
		for i := 0; i+2 < len(ops); i += 3 {
			op, a, b := ops[i]%4, int(ops[i+1]), int(ops[i+2])
			name := names[a%len(names)]
			owner := owners[name]
			rid := fmt.Sprintf("op%d", i)
			switch op {
			case 0, 1: // split to a random account below (or a wrong one)
				to := "s1"
				if l := below[owner]; len(l) > 0 {
					to = l[b%len(l)]
				}
				child := fmt.Sprintf("e%d", i)
				if _, err := split(h, child, name, to, b%5-1); err == nil {
					names = append(names, child)
					owners[child] = to
				}
			case 2: // take back
				_ = takeBack(h, rid, name)
			case 3: // activate onto one or two streams of the owner
				l := streams[owner]
				if len(l) == 0 {
					l = []string{"hd1a"}
				}
				ss := []string{l[b%len(l)]}
				if b%3 == 0 {
					ss = append(ss, l[(b+1)%len(l)])
				}
				_, _ = activate(h, rid, name, ss...)
			}
			conserved(t, h.M.Entitlements)
		}
	})
}
