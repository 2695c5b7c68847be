package segmenter

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pion/rtp"
	vtestutil "github.com/vigilcloud/vigil/internal/testutil"
)

// TestFFmpegH265CaptureReplay replays the RTP packets ffmpeg sent when it
// published libx265 + AAC through the RTSP server (captured with
// TestCaptureFFmpegRTP: 320x240, -g 25, 3 s, interleaved TCP) into the
// recorder, through one reused read buffer as the RTSP server delivers
// them. Every stored segment must decode cleanly: reassembling
// fragmentation units from slices of that buffer decoded as "PPS id out of
// range" slice garbage.
func TestFFmpegH265CaptureReplay(t *testing.T) {
	t.Parallel() // mostly waiting for ffprobe and ffmpeg
	vtestutil.RequireBinary(t, "ffmpeg")
	vtestutil.RequireBinary(t, "ffprobe")
	c := readCapture(t, "testdata/ffmpeg-h265-aac.rtp.gz")
	if len(c.medias) != 2 || c.medias[0].Codec != "H265" || c.medias[1].Codec != "MPEG4-GENERIC" {
		t.Fatalf("capture media %+v", c.medias)
	}
	g := newRig(t, 2*time.Second)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	sink, err := g.rec.Announce(context.Background(), "br1", "cam1-main", c.medias)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<16)
	var fus, sent int
	first := map[int]uint32{}
	for _, p := range c.pkts {
		var pkt rtp.Packet
		if err := pkt.Unmarshal(buf[:copy(buf, p.raw)]); err != nil {
			t.Fatal(err)
		}
		if p.media == 0 && (pkt.Payload[0]>>1)&0x3f == h265TypeFU {
			fus++
		}
		// Receive time from the RTP clock, as -re paced it.
		rate := int64(c.medias[p.media].ClockRate)
		if _, ok := first[p.media]; !ok {
			first[p.media] = pkt.Timestamp
		}
		at := t0.Add(time.Duration(int64(int32(pkt.Timestamp-first[p.media])) * int64(time.Second) / rate))
		if err := sink.WriteRTP(p.media, &pkt, at); err != nil {
			t.Fatalf("WriteRTP: %v", err)
		}
		sent++
	}
	sink.Close(nil)
	if fus < 10 {
		t.Fatalf("the capture has %d fragmentation units; it no longer exercises reassembly", fus)
	}
	g.rec.uploads.Wait()
	segs := g.segments(t, "cam1-main")
	if len(segs) < 2 {
		t.Fatalf("%d segments from %d packets: %+v", len(segs), sent, segs)
	}
	checkContiguous(t, segs)
	var total float64
	for i, s := range segs {
		if s.Width != 320 || s.Height != 240 {
			t.Errorf("segment %d: %dx%d", i, s.Width, s.Height)
		}
		d, _ := probe(t, g.segmentFile(t, "cam1-main", s)) // fails on any decode error
		total += d
	}
	if total < 2.5 {
		t.Errorf("segments hold %.2f s of the 3 s published", total)
	}
}

// TestH265Depacketizer: single NAL units, aggregation and fragmentation
// units (each fragment delivered in the same, then overwritten, buffer),
// PACI, and the malformed cases.
func TestH265Depacketizer(t *testing.T) {
	t.Parallel()
	var d h265Depacketizer
	feed := reusedBuffer(d.unmarshal)
	idr := []byte{0x26, 0x01, 0xaf, 0x01, 0x02, 0x03, 0x04, 0x05}
	vps, pps := []byte{0x40, 0x01, 0x0c, 0x01}, []byte{0x44, 0x01, 0xc0, 0x73}

	if got, err := feed(idr); err != nil || len(got) != 1 || !bytes.Equal(got[0], idr) {
		t.Fatalf("single: %x %v", got, err)
	}
	ap := append([]byte{0x60, 0x01, 0, byte(len(vps))}, vps...)
	ap = append(append(ap, 0, byte(len(pps))), pps...)
	if got, err := feed(ap); err != nil || len(got) != 2 || !bytes.Equal(got[0], vps) || !bytes.Equal(got[1], pps) {
		t.Fatalf("AP: %x %v", got, err)
	}
	// idr in three FUs: FU header S/E bits with type 19.
	fu := func(se byte, part []byte) []byte { return append([]byte{0x62, 0x01, se | 19}, part...) }
	for i, p := range [][]byte{fu(0x80, idr[2:4]), fu(0, idr[4:6])} {
		if got, err := feed(p); err != nil || len(got) != 0 {
			t.Fatalf("FU %d: %x %v", i, got, err)
		}
	}
	if got, err := feed(fu(0x40, idr[6:])); err != nil || len(got) != 1 || !bytes.Equal(got[0], idr) {
		t.Fatalf("FU end: %x %v (want %x)", got, err, idr)
	}
	// PACI (type 50) carrying the IDR as a single NAL unit, with a
	// 1-byte PHES: A=0, cType=19, PHSsize=1.
	paci := append([]byte{0x64, 0x01, 19 << 1, 1 << 4, 0x99}, idr[2:]...)
	if got, err := feed(paci); err != nil || len(got) != 1 || !bytes.Equal(got[0], idr) {
		t.Fatalf("PACI: %x %v", got, err)
	}
	// The tail of a unit whose start was lost is dropped quietly.
	if got, err := feed(fu(0x40, idr[6:])); err != nil || len(got) != 0 {
		t.Fatalf("FU end without start: %x %v", got, err)
	}
	for name, c := range map[string]struct {
		p    []byte
		want error
	}{
		"short":           {[]byte{0x26, 0x01}, errH265Short},
		"AP overrun":      {[]byte{0x60, 0x01, 0, 9, 0x26, 0x01}, errH265AP},
		"AP zero size":    {[]byte{0x60, 0x01, 0, 0}, errH265AP},
		"AP odd tail":     {append(bytes.Clone(ap), 0), errH265AP},
		"FU middle first": {fu(0, idr[4:6]), errH265FUStart},
		"FU start+end":    {fu(0xc0, idr[2:]), errH265FUBoth},
		"PACI short":      {[]byte{0x64, 0x01, 19 << 1, 3 << 4, 0x99}, errH265Short},
	} {
		d.reset()
		if _, err := feed(c.p); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

// reusedBuffer feeds payloads to unmarshal as the RTSP server does: in one
// buffer, overwritten after each call. It returns copies of the NAL units.
func reusedBuffer(unmarshal func([]byte) ([][]byte, error)) func([]byte) ([][]byte, error) {
	buf := make([]byte, 64)
	return func(p []byte) ([][]byte, error) {
		n := copy(buf, p)
		nalus, err := unmarshal(buf[:n])
		var out [][]byte
		for _, x := range nalus {
			out = append(out, bytes.Clone(x))
		}
		for i := range buf {
			buf[i] = 0xee
		}
		return out, err
	}
}
