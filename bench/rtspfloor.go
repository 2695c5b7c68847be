package bench

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// recordingFloor measures, in this process with nothing else running, the
// least CPU per RTP packet any recorder needs on top of receiving when it
// keeps what the issue asks of a segment: every payload byte copied out of
// the packet buffer once, hashed with SHA-256 (the index records it),
// written to a file in 1-s fragments, and each 6-s segment synced, linked
// into place with its directory synced, and its spool name removed. It
// skips everything else vigil does (depacketizing, fMP4 boxes, journal,
// index, meter), so (baseline + floor) / baseline bounds the ratio any
// such recorder can reach on this machine and disk.
func recordingFloor(dir string, src *benchH264, streams, seconds int) (usPerPacket float64, err error) {
	spool, objects := filepath.Join(dir, "floor-spool"), filepath.Join(dir, "floor-objects")
	defer os.RemoveAll(spool)
	defer os.RemoveAll(objects)
	for _, d := range []string{spool, objects} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return 0, err
		}
	}
	const segFrames = 6 * benchFPS
	frag := make([]byte, 0, 1<<20)
	packets := 0
	cpu0 := processCPU()
	for s := 0; s < streams; s++ {
		var f *os.File
		h := sha256.New()
		for fr := 0; fr < seconds*benchFPS; fr++ {
			if f == nil {
				if f, err = os.OpenFile(filepath.Join(spool, fmt.Sprintf("%d-%d", s, fr)), os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600); err != nil {
					return 0, err
				}
				h.Reset()
			}
			for _, p := range src.aus[(fr+s)%len(src.aus)] {
				frag = append(frag, p...)
				h.Write(p)
				packets++
			}
			if (fr+1)%benchFPS == 0 {
				if _, err := f.Write(frag); err != nil {
					return 0, err
				}
				frag = frag[:0]
			}
			if (fr+1)%segFrames == 0 {
				name := fmt.Sprintf("%d-%d-%x", s, fr, h.Sum(nil)[:4])
				if err := closeFloorSegment(f, filepath.Join(objects, name)); err != nil {
					return 0, err
				}
				f = nil
			}
		}
		if f != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}
	cpu := processCPU() - cpu0
	if packets == 0 {
		return 0, fmt.Errorf("bench rtsp: floor: no packets")
	}
	return float64(cpu) / float64(time.Microsecond) / float64(packets), nil
}

func closeFloorSegment(f *os.File, final string) error {
	defer f.Close()
	if err := f.Sync(); err != nil {
		return err
	}
	if err := os.Link(f.Name(), final); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(final))
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return err
	}
	return os.Remove(f.Name())
}
