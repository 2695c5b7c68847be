package aac

import (
	"bytes"
	"errors"
	"testing"
)

func TestParseConfig(t *testing.T) {
	cases := []struct {
		name string
		asc  []byte
		want Config
	}{
		{"lc-48k-stereo", []byte{0x11, 0x90}, Config{ObjectType: 2, SampleRate: 48000, Channels: 2}},
		{"lc-44k1-stereo", []byte{0x12, 0x10}, Config{ObjectType: 2, SampleRate: 44100, Channels: 2}},
		{"lc-16k-mono", []byte{0x14, 0x08}, Config{ObjectType: 2, SampleRate: 16000, Channels: 1}},
		// 7.1: channel configuration 7 means 8 channels.
		{"lc-48k-7.1", []byte{0x11, 0xb8}, Config{ObjectType: 2, SampleRate: 48000, Channels: 8}},
		// HE-AAC signalled explicitly: SBR (5), 24 kHz core, 48 kHz output, then AAC-LC.
		{"he-aac", []byte{0x2b, 0x11, 0x88, 0x00}, Config{ObjectType: 2, SampleRate: 24000, Channels: 2, ExtensionSampleRate: 48000}},
		// Explicit 24-bit frequency (index 15): 12345 Hz, mono.
		{"explicit-rate", []byte{0x17, 0x80, 0x18, 0x1c, 0x88}, Config{ObjectType: 2, SampleRate: 12345, Channels: 1}},
		// Escaped object type 31 + 6 bits: 32 + 10 = 42 (USAC), 48 kHz stereo.
		{"escaped-type", []byte{0xf9, 0x46, 0x40}, Config{ObjectType: 42, SampleRate: 48000, Channels: 2}},
	}
	for _, c := range cases {
		got, err := ParseConfig(c.asc)
		if err != nil || got != c.want {
			t.Errorf("%s: ParseConfig(%x) = %+v, %v; want %+v", c.name, c.asc, got, err, c.want)
		}
	}
	for name, b := range map[string][]byte{
		"empty":         nil,
		"one-byte":      {0x11},
		"pce":           {0x11, 0x80},       // channel configuration 0
		"reserved-rate": {0x16, 0x90},       // frequency index 13
		"type-0":        {0x01, 0x90},       // object type 0
		"short-rate":    {0x17, 0x80, 0x18}, // explicit rate cut off
		"chan-8":        {0x11, 0xc0},       // channel configuration 8 (reserved here)
	} {
		if _, err := ParseConfig(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

// auPayload builds an RFC 3640 AAC-hbr payload (13-bit sizes, 3-bit indexes).
func auPayload(aus ...[]byte) []byte {
	bits := 16 * len(aus)
	b := []byte{byte(bits >> 8), byte(bits)}
	for _, au := range aus {
		h := uint16(len(au)) << 3
		b = append(b, byte(h>>8), byte(h))
	}
	for _, au := range aus {
		b = append(b, au...)
	}
	return b
}

func TestSplitAUs(t *testing.T) {
	a, b := bytes.Repeat([]byte{1}, 300), bytes.Repeat([]byte{2}, 7)
	got, err := SplitAUs(auPayload(a, b), 13, 3, 3)
	if err != nil || len(got) != 2 || !bytes.Equal(got[0], a) || !bytes.Equal(got[1], b) {
		t.Fatalf("%d AUs, %v", len(got), err)
	}
	// A fragmented AU: the header says 300 bytes, 100 are here.
	p := auPayload(a)[:4+100]
	got, err = SplitAUs(p, 13, 3, 3)
	if !errors.Is(err, ErrFragmented) || len(got) != 1 || len(got[0]) != 100 {
		t.Fatalf("fragment: %d AUs, %v", len(got), err)
	}
	// AAC-lbr: 6-bit sizes, 2-bit indexes, one byte per header.
	lbr := []byte{0, 16, 3 << 2, 2 << 2, 9, 9, 9, 8, 8}
	got, err = SplitAUs(lbr, 6, 2, 2)
	if err != nil || len(got) != 2 || len(got[0]) != 3 || len(got[1]) != 2 {
		t.Fatalf("lbr: %v %v", got, err)
	}
	interleaved := auPayload(b)
	interleaved[3] |= 1
	for name, c := range map[string]struct {
		p       []byte
		s, i, d int
	}{
		"empty":            {nil, 13, 3, 3},
		"no-headers":       {[]byte{0, 0, 1}, 13, 3, 3},
		"headers-overrun":  {[]byte{0, 32, 0, 8}, 13, 3, 3},
		"leftover-bits":    {[]byte{0, 17, 0, 8, 0, 1}, 13, 3, 3},
		"second-truncated": {auPayload(a, b)[:4+300+3], 13, 3, 3},
		"trailing":         {append(auPayload(b), 0), 13, 3, 3},
		"interleaved":      {interleaved, 13, 3, 3},
		"bad-lengths":      {auPayload(b), 0, 3, 3},
		"huge-lengths":     {auPayload(b), 40, 3, 3},
	} {
		if _, err := SplitAUs(c.p, c.s, c.i, c.d); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}
