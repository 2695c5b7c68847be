package segmenter

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/vigilcloud/vigil/ingest/rtsp"
	vtestutil "github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/media/aac/aactest"
	"github.com/vigilcloud/vigil/media/fmp4"
)

// probedPkt is one packet as ffprobe reads it from a stored segment.
type probedPkt struct {
	Type string `json:"codec_type"`
	DTS  int64  `json:"dts"`
	Hash string `json:"data_hash"`
}

// probePackets is every packet of path, in file order, with its data hash.
func probePackets(t *testing.T, path string) []probedPkt {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "packet=codec_type,dts,data_hash",
		"-show_data_hash", "SHA256", "-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var r struct{ Packets []probedPkt }
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatal(err)
	}
	return r.Packets
}

func dataHash(b []byte) string {
	s := sha256.Sum256(b)
	return "SHA256:" + hex.EncodeToString(s[:])
}

// avSource is H.264 with AAC whose frames alternate between half a second
// of loud noise (frames of ~500 bytes, fragmented over a small MTU) and
// half a second of silence (frames of a few bytes, many to a packet).
func avSource(t *testing.T, seconds string) *source {
	t.Helper()
	return makeSource(t, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-f", "lavfi", "-i", "anoisesrc=color=white:sample_rate=48000:amplitude=0.5",
		"-af", "volume='if(lt(mod(t,1),0.5),1,0)':eval=frame", "-t", seconds,
		"-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-g", "25", "-c:a", "aac", "-b:a", "192k", "-ac", "2")
}

// fragmentedAudioPackets is src's video as packets() sends it, and its AAC
// track (track 1) packetised into payloads of at most maxPayload bytes as
// a Bridge does, fragmenting the frames that do not fit; skip drops
// packets by their index among the audio packets (loss).
func fragmentedAudioPackets(src *source, maxPayload int, skip map[int]bool) []rtpPkt {
	var out []rtpPkt
	for _, p := range src.packets() {
		if p.media == 0 {
			out = append(out, p)
		}
	}
	tr := src.tracks[1]
	aus := make([][]byte, len(src.samples[1]))
	for i, s := range src.samples[1] {
		aus[i] = s.data
	}
	const base = 0x7ffff000
	for i, p := range aactest.Packetize(aus, maxPayload) {
		if skip[i] {
			continue
		}
		s := src.samples[1][p.FirstAU]
		out = append(out, rtpPkt{media: 1, at: float64(s.dts) / float64(tr.TimeScale), pkt: &rtp.Packet{
			Header:  rtp.Header{Version: 2, PayloadType: 97, SequenceNumber: uint16(5000 + i), Timestamp: base + uint32(s.dts), Marker: p.Marker},
			Payload: p.Data}})
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].at < out[b].at })
	return out
}

// recordPackets publishes pkts of src as one session of 1-s segments,
// tears it down and waits until its segments are stored.
func recordPackets(t *testing.T, src *source, pkts []rtpPkt) *rig {
	t.Helper()
	g := newRig(t, time.Second)
	publish(t, g, "cam1-main", src, time.Now().Add(-time.Minute), pkts).Close(nil)
	g.rec.uploads.Wait()
	if n := value(g.rec.m.closed.WithLabelValues("teardown")); n != 1 {
		t.Fatalf("sessions torn down cleanly: %v", n)
	}
	return g
}

// checkStoredAudio reads every stored segment with ffprobe and checks its
// audio against src: the frames are src's frames from the one at the
// first picture on, in order, each once, byte for byte, except those in
// missing; within a segment each sits at its source time relative to the
// segment's first picture (to the sample; the picture's decode time is
// where its run stands), so decode times rise and A/V stay in sync. It returns the number of frames stored.
func checkStoredAudio(t *testing.T, g *rig, src *source, missing map[int]bool) int {
	t.Helper()
	rate := int64(src.tracks[1].TimeScale)
	videoAt := map[string]int64{} // picture hash → source DTS (90 kHz)
	for _, s := range src.samples[0] {
		videoAt[dataHash(s.data)] = s.dts
	}
	next, stored := -1, 0 // source index of the next audio frame expected
	for si, seg := range g.segments(t, "cam1-main") {
		path := g.segmentFile(t, "cam1-main", seg)
		probe(t, path)
		pkts := probePackets(t, path)
		v0, ok, at := int64(0), false, int64(0)
		for _, p := range pkts {
			if p.Type == "video" {
				v0, ok = videoAt[p.Hash]
				at = p.DTS * rate / 90000
				break
			}
		}
		if !ok {
			t.Fatalf("segment %d: first picture not from the source", si)
		}
		var last int64 = -1
		for _, p := range pkts {
			if p.Type != "audio" {
				continue
			}
			if next < 0 {
				for i, s := range src.samples[1] {
					if dataHash(s.data) == p.Hash {
						next = i
						break
					}
				}
				if next < 0 || src.samples[1][next].dts*90000/rate > v0+90000/25 {
					t.Fatalf("segment %d: first audio frame is source frame %d, not the one at the first picture", si, next)
				}
			}
			for missing[next] {
				next++
			}
			if next >= len(src.samples[1]) {
				t.Fatalf("segment %d: more audio frames than sent", si)
			}
			s := src.samples[1][next]
			if p.Hash != dataHash(s.data) {
				t.Fatalf("segment %d: audio frame at %d is not source frame %d (lost, duplicated or reordered)", si, p.DTS, next)
			}
			if p.DTS <= last {
				t.Errorf("segment %d: audio decode time %d after %d", si, p.DTS, last)
			}
			last = p.DTS
			if want := s.dts - v0*rate/90000 + at; p.DTS < want-2 || p.DTS > want+2 {
				t.Errorf("segment %d: source frame %d at %d, want %d (its time after the first picture)", si, next, p.DTS, want)
			}
			next++
			stored++
		}
	}
	// Only the frames after the last picture's end are left out.
	lastPic := src.samples[0][len(src.samples[0])-1].dts + 3600
	for ; next < len(src.samples[1]); next++ {
		if src.samples[1][next].dts*90000/rate < lastPic && !missing[next] {
			t.Errorf("source frame %d (at %.3f s) not stored", next, float64(src.samples[1][next].dts)/float64(rate))
		}
	}
	return stored
}

// TestRecordFragmentedAAC: AAC frames larger than the packets are sent in
// fragments (RFC 3640 3.2.3), small ones many to a packet; every frame is
// stored once, byte for byte, at its time.
func TestRecordFragmentedAAC(t *testing.T) {
	vtestutil.RequireBinary(t, "ffprobe")
	src := avSource(t, "3")
	if src.tracks[1].Codec != fmp4.AAC {
		t.Fatalf("track 1 is %s", src.tracks[1].Codec)
	}
	pkts := fragmentedAudioPackets(src, 200, nil)
	frags := 0
	for _, p := range pkts {
		if p.media == 1 && !p.pkt.Marker {
			frags++
		}
	}
	if frags < 50 {
		t.Fatalf("only %d fragments other than last: the source's frames are too small", frags)
	}
	g := recordPackets(t, src, pkts)
	if n := checkStoredAudio(t, g, src, nil); n < 130 {
		t.Errorf("%d audio frames stored of 3 s", n)
	}
	if value(g.rec.m.audioLost) != 0 {
		t.Errorf("audio frames lost: %v", value(g.rec.m.audioLost))
	}
}

// TestRecordFragmentedAACWithLoss: a lost fragment costs its frame only:
// the session goes on, the loss is counted, and the frames after it keep
// their time.
func TestRecordFragmentedAACWithLoss(t *testing.T) {
	vtestutil.RequireBinary(t, "ffprobe")
	src := avSource(t, "2")
	all := aactest.Packetize(func() (aus [][]byte) {
		for _, s := range src.samples[1] {
			aus = append(aus, s.data)
		}
		return aus
	}(), 200)
	// A middle fragment of a loud frame 0.2 s in, and the last fragment of
	// one 1.2 s in.
	skip, missing := map[int]bool{}, map[int]bool{}
	for _, c := range []struct {
		at   float64
		last bool
	}{{0.2, false}, {1.2, true}} {
		for i := 1; i < len(all)-1; i++ {
			p := all[i]
			s := src.samples[1][p.FirstAU]
			if float64(s.dts)/float64(src.tracks[1].TimeScale) >= c.at && all[i-1].FirstAU == p.FirstAU && p.Marker == c.last {
				skip[i], missing[p.FirstAU] = true, true
				break
			}
		}
	}
	if len(missing) != 2 {
		t.Fatalf("lost frames %v", missing)
	}
	g := recordPackets(t, src, fragmentedAudioPackets(src, 200, skip))
	checkStoredAudio(t, g, src, missing)
	if n := value(g.rec.m.audioLost); n != 2 {
		t.Errorf("audio frames lost: %v, want 2", n)
	}
}

// TestBadAACFragmentEndsSession: fragments that no packet loss explains
// end that session with an error naming the fault; another stream's
// session goes on, and the stream can be published again.
func TestBadAACFragmentEndsSession(t *testing.T) {
	au := make([]byte, 300)
	frag := func(declared, from, to int) []byte {
		return append([]byte{0, 16, byte(declared >> 5), byte(declared << 3)}, au[from:to]...)
	}
	type p struct {
		payload []byte
		ts      uint32
		marker  bool
	}
	for _, c := range []struct {
		name, want string
		sizeLen    string
		pkts       []p
	}{
		{"total size exceeded", "exceed", "13", []p{{frag(300, 0, 200), 0, false}, {frag(300, 0, 200), 0, true}}},
		{"declared size too large", "at most 65536", "20", []p{{[]byte{0, 23, 0xff, 0xff, 0xf0, 1, 2}, 0, false}}},
		{"fragment with no AU in progress", "no AU in progress", "13", []p{{frag(300, 200, 300), 0, true}}},
		{"AU-size changes", "changes", "13", []p{{frag(300, 0, 100), 0, false}, {frag(299, 100, 299), 0, true}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := newRig(t, time.Second)
			aacMedia := func(sizeLen string) rtsp.Media {
				return rtsp.Media{Type: "audio", Codec: "MPEG4-GENERIC", ClockRate: 48000, Channels: 2,
					Fmtp: map[string]string{"config": "1190", "sizelength": sizeLen, "indexlength": "3", "indexdeltalength": "3"}}
			}
			other, err := g.rec.Announce(t.Context(), "br2", "cam2-main", []rtsp.Media{h264Media, aacMedia("13")})
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close(nil)
			sink, err := g.rec.Announce(t.Context(), "br1", "cam1-main", []rtsp.Media{h264Media, aacMedia(c.sizeLen)})
			if err != nil {
				t.Fatal(err)
			}
			var werr error
			for i, pk := range c.pkts {
				werr = sink.WriteRTP(1, &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(i), Timestamp: pk.ts, Marker: pk.marker}, Payload: pk.payload}, time.Now())
				if werr != nil {
					break
				}
			}
			if werr == nil || !strings.Contains(werr.Error(), c.want) {
				t.Fatalf("error %v, want one saying %q", werr, c.want)
			}
			sink.Close(werr)
			if value(g.rec.m.closed.WithLabelValues("error")) != 1 {
				t.Error("session not counted as ended by an error")
			}
			whole := []byte{0, 16, 0, 3 << 3, 1, 2, 3}
			if err := other.WriteRTP(1, &rtp.Packet{Header: rtp.Header{Version: 2, Timestamp: 1}, Payload: whole}, time.Now()); err != nil {
				t.Errorf("the other stream's session: %v", err)
			}
			again, err := g.rec.Announce(t.Context(), "br1", "cam1-main", []rtsp.Media{h264Media, aacMedia("13")})
			if err != nil {
				t.Fatalf("publishing again: %v", err)
			}
			again.Close(nil)
		})
	}
}
