package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Payload kinds a simulated Bridge sends.
const (
	PayloadSynthetic = "synthetic" // fMP4 boxes around random-free filler, sized by bitrate
	PayloadFMP4      = "fmp4"      // a real fragmented MP4 made by ffmpeg
	PayloadTS        = "ts"        // a real MPEG-TS made by ffmpeg
)

// SyntheticFMP4 returns size bytes that are well-formed fMP4 at the box
// level (ftyp, then one mdat), for load tests where only bytes matter.
func SyntheticFMP4(size int) []byte {
	const ftypLen = 24
	if size < ftypLen+8 {
		size = ftypLen + 8
	}
	b := make([]byte, size)
	binary.BigEndian.PutUint32(b[0:], ftypLen)
	copy(b[4:], "ftypiso6")
	binary.BigEndian.PutUint32(b[12:], 0)
	copy(b[16:], "iso6mp41")
	binary.BigEndian.PutUint32(b[ftypLen:], uint32(size-ftypLen))
	copy(b[ftypLen+4:], "mdat")
	for i := ftypLen + 8; i < size; i++ {
		b[i] = byte(i * 31)
	}
	return b
}

// FFmpegSegment returns one self-contained segment of a test picture made by
// ffmpeg, cached under dir so it is generated once.
func FFmpegSegment(ctx context.Context, dir, kind string, dur time.Duration, width, height int) ([]byte, string, error) {
	ext, ctype, args := "mp4", "video/mp4", []string{"-movflags", "+frag_keyframe+empty_moov+default_base_moof", "-f", "mp4"}
	if kind == PayloadTS {
		ext, ctype, args = "ts", "video/mp2t", []string{"-f", "mpegts"}
	}
	path := filepath.Join(dir, fmt.Sprintf("seg-%dx%d-%dms.%s", width, height, dur.Milliseconds(), ext))
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
		return b, ctype, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	tmp := path + ".tmp"
	cmdArgs := append([]string{"-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%dx%d:rate=25", width, height),
		"-t", fmt.Sprintf("%.3f", dur.Seconds()), "-c:v", "libx264", "-preset", "veryfast",
		"-g", "25", "-pix_fmt", "yuv420p"}, args...)
	cmdArgs = append(cmdArgs, tmp)
	out, err := exec.CommandContext(ctx, "ffmpeg", cmdArgs...).CombinedOutput()
	if err != nil {
		return nil, "", fmt.Errorf("ffmpeg: %v: %s", err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, "", err
	}
	b, err := os.ReadFile(path)
	return b, ctype, err
}
