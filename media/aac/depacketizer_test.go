package aac

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/vigilcloud/vigil/media/aac/aactest"
)

// pkt is one RTP packet for the Depacketizer.
type pkt struct {
	payload []byte
	ts      int64
	seq     uint16
	marker  bool
}

// frag is the fragment [from, to) of au as a payload.
func frag(au []byte, from, to int) []byte {
	return append([]byte{0, 16, byte(len(au) >> 5), byte(len(au) << 3)}, au[from:to]...)
}

func randomAU(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// feed pushes pkts and returns the AUs (copied), the AUs lost and the
// first error.
func feed(d *Depacketizer, pkts []pkt) ([][]byte, int, error) {
	var got [][]byte
	lost := 0
	for _, p := range pkts {
		aus, l, err := d.Push(p.payload, p.ts, p.seq, p.marker)
		lost += l
		if err != nil {
			return got, lost, err
		}
		for _, au := range aus {
			got = append(got, bytes.Clone(au))
		}
		clear(p.payload) // the RTP server reuses its buffer
	}
	return got, lost, nil
}

func hbr() *Depacketizer { return &Depacketizer{SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3} }

func TestDepacketizerReassembles(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	a, b, c := randomAU(r, 300), randomAU(r, 40), randomAU(r, 50)
	got, lost, err := feed(hbr(), []pkt{
		{auPayload(b, c), 0, 1, true},
		{frag(a, 0, 100), 2048, 2, false},
		{frag(a, 100, 200), 2048, 3, false},
		{frag(a, 200, 300), 2048, 4, true},
		{auPayload(c), 3072, 5, true},
	})
	if err != nil || lost != 0 {
		t.Fatalf("lost %d, %v", lost, err)
	}
	want := [][]byte{b, c, a, c}
	if len(got) != len(want) {
		t.Fatalf("%d AUs, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("AU %d differs", i)
		}
	}
}

// A last fragment without the marker bit still completes the AU when the
// bytes add up.
func TestDepacketizerCompleteWithoutMarker(t *testing.T) {
	a := randomAU(rand.New(rand.NewPCG(3, 4)), 200)
	got, lost, err := feed(hbr(), []pkt{{frag(a, 0, 150), 0, 1, false}, {frag(a, 150, 200), 0, 2, false}})
	if err != nil || lost != 0 || len(got) != 1 || !bytes.Equal(got[0], a) {
		t.Fatalf("%d AUs, lost %d, %v", len(got), lost, err)
	}
}

// Loss gives up the AUs it damages, counts them, and goes on.
func TestDepacketizerLoss(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	a, b, c := randomAU(r, 300), randomAU(r, 300), randomAU(r, 30)
	for _, tc := range []struct {
		name string
		pkts []pkt
		want [][]byte
		lost int
	}{
		{"timestamp changes before the last fragment", []pkt{
			{frag(a, 0, 100), 0, 1, false}, {frag(a, 100, 200), 0, 2, false},
			{auPayload(c), 1024, 3, true}}, [][]byte{c}, 1},
		{"next AU's fragments after a lost last fragment", []pkt{
			{frag(a, 0, 100), 0, 1, false}, {frag(a, 100, 200), 0, 2, false},
			{frag(b, 0, 150), 1024, 3, false}, {frag(b, 150, 300), 1024, 4, true}}, [][]byte{b}, 1},
		{"middle fragment lost", []pkt{
			{frag(a, 0, 100), 0, 1, false}, {frag(a, 200, 300), 0, 3, true},
			{auPayload(c), 1024, 4, true}}, [][]byte{c}, 1},
		{"first fragment lost", []pkt{
			{auPayload(c), 0, 1, true},
			{frag(a, 100, 200), 1024, 3, false}, {frag(a, 200, 300), 1024, 4, true},
			{auPayload(c), 2048, 5, true}}, [][]byte{c, c}, 1},
		{"only the last fragment arrives", []pkt{
			{auPayload(c), 0, 1, true}, {frag(a, 200, 300), 1024, 4, true},
			{auPayload(c), 2048, 5, true}}, [][]byte{c, c}, 1},
		{"last fragment and next AU's head lost", []pkt{
			{frag(a, 0, 100), 0, 1, false}, {frag(b, 150, 300), 1024, 5, true},
			{auPayload(c), 2048, 6, true}}, [][]byte{c}, 2},
		{"reordered fragments", []pkt{
			{frag(a, 0, 100), 0, 1, false}, {frag(a, 200, 300), 0, 3, true}, {frag(a, 100, 200), 0, 2, false},
			{auPayload(c), 1024, 4, true}}, [][]byte{c}, 1},
		{"duplicated fragment", []pkt{
			{frag(a, 0, 100), 0, 1, false}, {frag(a, 0, 100), 0, 1, false}, {frag(a, 100, 300), 0, 2, true},
			{auPayload(c), 1024, 3, true}, {auPayload(c), 1024, 3, true}}, [][]byte{a, c}, 0},
		{"late duplicate of a complete AU's fragment", []pkt{
			{frag(a, 0, 100), 0, 1, false}, {frag(a, 100, 300), 0, 2, true},
			{frag(a, 100, 300), 0, 1, true}, {auPayload(c), 1024, 3, true}}, [][]byte{a, c}, 0},
		{"sequence wraps", []pkt{
			{frag(a, 0, 100), 0, 65535, false}, {frag(a, 100, 300), 0, 0, true}}, [][]byte{a}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pk := make([]pkt, len(tc.pkts))
			for i, p := range tc.pkts {
				p.payload = bytes.Clone(p.payload)
				pk[i] = p
			}
			got, lost, err := feed(hbr(), pk)
			if err != nil {
				t.Fatalf("loss ended the stream: %v", err)
			}
			if lost != tc.lost {
				t.Errorf("lost %d AUs, want %d", lost, tc.lost)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("%d AUs, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if !bytes.Equal(got[i], tc.want[i]) {
					t.Errorf("AU %d differs", i)
				}
			}
		})
	}
}

// Fragments that no loss explains end the stream with an error.
func TestDepacketizerBadFragments(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	a, c := randomAU(r, 300), randomAU(r, 30)
	huge := []byte{0, 32, 0, 1, 0, 1, 9, 9, 9} // one 32-bit AU-size: 65537 bytes, over the cap
	for _, tc := range []struct {
		name string
		d    *Depacketizer
		pkts []pkt
	}{
		{"total size exceeded", hbr(), []pkt{{frag(a, 0, 200), 0, 1, false}, {append(frag(a, 100, 300), 1, 2), 0, 2, true}}},
		{"declared size too large", &Depacketizer{SizeLength: 32}, []pkt{{huge, 0, 1, false}}},
		{"last fragment with no AU in progress", hbr(), []pkt{{auPayload(c), 0, 1, true}, {frag(a, 200, 300), 1024, 2, true}}},
		{"fragment of a complete AU", hbr(), []pkt{{frag(a, 0, 100), 0, 1, false}, {frag(a, 100, 300), 0, 2, true}, {frag(a, 0, 100), 0, 3, false}}},
		{"AU-size changes", hbr(), []pkt{{frag(a, 0, 100), 0, 1, false}, {frag(a[:299], 100, 299), 0, 2, true}}},
		{"marker before the AU is complete", hbr(), []pkt{{frag(a, 0, 100), 0, 1, false}, {frag(a, 100, 200), 0, 2, true}}},
		{"whole AU inside a fragmented one", hbr(), []pkt{{frag(a, 0, 100), 0, 1, false}, {auPayload(c), 0, 2, true}}},
		{"empty fragment", hbr(), []pkt{{frag(a, 0, 0), 0, 1, false}}},
		{"malformed payload", hbr(), []pkt{{[]byte{0, 16, 0}, 0, 1, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := feed(tc.d, tc.pkts)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("%v, want ErrMalformed", err)
			}
			if tc.name != "malformed payload" && !errors.Is(err, ErrFragment) {
				t.Errorf("%v, want ErrFragment", err)
			}
		})
	}
}

// Whatever the AU sizes and the MTU, what aactest.Packetize sends comes
// back unchanged.
func TestDepacketizerRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, mtu := range []int{5, 64, 200, 1400} {
		var aus [][]byte
		for range 200 {
			aus = append(aus, randomAU(r, 1+r.IntN(2000)))
		}
		checkRoundTrip(t, aus, mtu)
	}
}

func checkRoundTrip(t *testing.T, aus [][]byte, mtu int) {
	t.Helper()
	d := hbr()
	var got [][]byte
	for i, p := range aactest.Packetize(aus, mtu) {
		out, lost, err := d.Push(p.Data, int64(p.FirstAU)*1024, uint16(i), p.Marker)
		if err != nil || lost != 0 {
			t.Fatalf("mtu %d, packet %d: lost %d, %v", mtu, i, lost, err)
		}
		for _, au := range out {
			got = append(got, bytes.Clone(au))
		}
	}
	if len(got) != len(aus) {
		t.Fatalf("mtu %d: %d AUs back of %d", mtu, len(got), len(aus))
	}
	for i := range aus {
		if !bytes.Equal(got[i], aus[i]) {
			t.Fatalf("mtu %d: AU %d differs", mtu, i)
		}
	}
}
