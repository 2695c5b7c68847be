package aac

import "testing"

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
