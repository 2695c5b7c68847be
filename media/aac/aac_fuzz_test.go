package aac

import (
	"bytes"
	"errors"
	"testing"
)

func FuzzAACConfig(f *testing.F) {
	for _, s := range [][]byte{{0x11, 0x90}, {0x12, 0x10}, {0x2b, 0x11, 0x88, 0x00}, {0x17, 0x80, 0x18, 0x1c, 0x88}, {0xf9, 0x46, 0x40}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		if c.SampleRate <= 0 || c.Channels <= 0 || c.Channels > 8 || c.ObjectType <= 0 {
			t.Fatalf("accepted %x as %+v", b, c)
		}
	})
}

func FuzzAUHeaders(f *testing.F) {
	f.Add(auPayload([]byte{1, 2, 3}, []byte{4}), 13, 3, 3)
	f.Add([]byte{0, 16, 3 << 2, 2 << 2, 9, 9, 9, 8, 8}, 6, 2, 2)
	f.Add(auPayload(make([]byte, 300))[:50], 13, 3, 3)
	f.Fuzz(func(t *testing.T, p []byte, size, index, delta int) {
		aus, err := SplitAUs(p, size, index, delta)
		if err != nil {
			return
		}
		n := 0
		for _, au := range aus {
			n += len(au)
		}
		if len(aus) == 0 || n > len(p)-2 {
			t.Fatalf("%d AUs of %d bytes from a %d-byte payload", len(aus), n, len(p))
		}
	})
}

// FuzzDepacketizer feeds arbitrary packet sequences: never a panic, no AU
// above MaxAUSize, and no more bytes out than came in.
func FuzzDepacketizer(f *testing.F) {
	a := bytes.Repeat([]byte{7}, 300)
	seed := func(pkts ...pkt) []byte {
		var b []byte
		for _, p := range pkts {
			flags := byte(p.ts / 1024 & 0x0f)
			if p.marker {
				flags |= 0x80
			}
			b = append(b, flags, byte(p.seq), byte(len(p.payload)))
			b = append(b, p.payload...)
		}
		return b
	}
	f.Add(seed(pkt{frag(a, 0, 100), 0, 1, false}, pkt{frag(a, 100, 200), 0, 1, false}, pkt{frag(a, 200, 300), 0, 1, true}))
	f.Add(seed(pkt{auPayload(a[:5], a[:9]), 0, 1, true}, pkt{frag(a, 0, 100), 1024, 1, false}, pkt{frag(a, 200, 300), 1024, 2, true}))
	f.Add(seed(pkt{frag(a, 0, 100), 0, 1, false}, pkt{auPayload(a[:5]), 1024, 1, true}, pkt{frag(a, 100, 250), 0, 1, true}))
	f.Fuzz(func(t *testing.T, data []byte) {
		d := hbr()
		var ts int64
		var seq uint16
		in, out := 0, 0
		for len(data) >= 3 {
			flags, dseq, n := data[0], data[1], min(int(data[2]), len(data)-3)
			payload := bytes.Clone(data[3 : 3+n])
			data = data[3+n:]
			ts += int64(flags&0x0f) * 1024
			seq += uint16(dseq)
			in += len(payload)
			aus, lost, err := d.Push(payload, ts, seq, flags&0x80 != 0)
			if lost < 0 || lost > 2 {
				t.Fatalf("lost %d AUs in one packet", lost)
			}
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("error not ErrMalformed: %v", err)
				}
				return
			}
			for _, au := range aus {
				if len(au) > MaxAUSize {
					t.Fatalf("AU of %d bytes", len(au))
				}
				out += len(au)
			}
			if out > in {
				t.Fatalf("%d bytes of AUs from %d of payload", out, in)
			}
		}
	})
}

// FuzzDepacketizerRoundTrip packetises fuzzed AUs over a fuzzed MTU: the
// Depacketizer gives back exactly those AUs.
func FuzzDepacketizerRoundTrip(f *testing.F) {
	f.Add(bytes.Repeat([]byte{1, 2, 3}, 200), uint16(40), uint8(64))
	f.Add([]byte{9}, uint16(1), uint8(5))
	f.Fuzz(func(t *testing.T, data []byte, size uint16, mtu uint8) {
		if mtu < 5 {
			return
		}
		// Cut data into AUs of 1 to 8191 bytes, size-driven.
		var aus [][]byte
		n := int(size%8191) + 1
		for len(data) > 0 {
			k := min(n, len(data))
			aus = append(aus, data[:k])
			data = data[k:]
			n = n*7%8191 + 1
		}
		checkRoundTrip(t, aus, int(mtu))
	})
}
