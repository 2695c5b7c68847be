package segmenter

import (
	"context"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/vigilcloud/vigil/ingest/rtsp"
)

// FuzzSegmenter feeds arbitrary RTP payload sequences (H.264 video and AAC
// audio) through depacketising, DTS and segmenting: never a panic.
func FuzzSegmenter(f *testing.F) {
	sps := []byte{0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x47, 0xfe, 0xc8}
	pps := []byte{0x68, 0xce, 0x3c, 0x80}
	idr := []byte{0x65, 0x88, 0x84, 0x00, 0x33, 0xff}
	p := []byte{0x41, 0x9a, 0x02, 0x04}
	seed := func(pkts ...[]byte) []byte {
		var b []byte
		for i, pk := range pkts {
			b = append(b, byte(i%3&^1), 0x81, byte(len(pk)))
			b = append(b, pk...)
		}
		return b
	}
	stapA := append([]byte{0x18, 0, byte(len(sps))}, sps...)
	stapA = append(append(stapA, 0, byte(len(pps))), pps...)
	f.Add(seed(stapA, idr, p, p, idr, p))
	f.Add(seed([]byte{0x7c, 0x85, 1, 2}, []byte{0x7c, 0x05, 3}, []byte{0x7c, 0x45, 4}))              // FU-A
	f.Add(seed([]byte{0, 16, 0, 8, 1, 2}, stapA, idr, []byte{0, 16, 0xff, 0xf8, 1}, idr, p, p, idr)) // AAC headers
	// A fragmented AAC frame (RFC 3640 3.2.3) on media 1: three packets
	// of one timestamp, the marker on the last; then one with its middle
	// fragment lost, then a whole one.
	audio := func(flags byte, from, to int) []byte {
		return append([]byte{1, flags, byte(4 + to - from), 0, 16, 300 >> 5, 300 << 3 & 0xff}, make([]byte, to-from)...)
	}
	frags := seed(stapA, idr)
	for _, a := range [][]byte{audio(0x01, 0, 100), audio(0, 100, 200), audio(0x80, 200, 300),
		audio(0x01, 0, 100), audio(0x40, 200, 300), {1, 0x81, 7, 0, 16, 0, 3 << 3, 1, 2, 3}} {
		frags = append(frags, a...)
	}
	f.Add(append(frags, seed(p, idr)...))
	f.Add([]byte{1, 0, 0, 0, 0xff, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := New(Config{SpoolDir: t.TempDir(), SegmentDuration: 50 * time.Millisecond, FragmentDuration: 20 * time.Millisecond}, newRegistry(), discardStorer{}, nopIndex{})
		if err != nil {
			t.Fatal(err)
		}
		sink, err := rec.Announce(context.Background(), "br1", "cam1-main", []rtsp.Media{
			{Type: "video", Codec: "H264", ClockRate: 90000, Fmtp: map[string]string{"sprop-parameter-sets": "Z0LAHtkAoEf+yA==,aM48gA=="}},
			{Type: "audio", Codec: "MPEG4-GENERIC", ClockRate: 48000, Channels: 2, Fmtp: map[string]string{"config": "1190", "sizelength": "13", "indexlength": "3", "indexdeltalength": "3"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Unix(1_800_000_000, 0)
		seq := [2]uint16{}
		ts := [2]uint32{}
		var werr error
		for len(data) >= 3 && werr == nil {
			m, flags, n := int(data[0]&1), data[1], int(data[2])
			data = data[3:]
			n = min(n, len(data))
			payload := data[:n]
			data = data[n:]
			if flags&0x40 == 0 {
				seq[m]++
			}
			ts[m] += uint32(flags&0x0f) * 1800
			now = now.Add(time.Duration(flags&0x0f) * 20 * time.Millisecond)
			werr = sink.WriteRTP(m, &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq[m], Timestamp: ts[m], Marker: flags&0x80 != 0}, Payload: payload}, now)
		}
		sink.Close(werr)
		rec.Drain(context.Background())
	})
}
