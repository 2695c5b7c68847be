package segmenter

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilcloud/vigil/ingest/rtsp"
)

// A capture is what a real publisher sent through the RTSP server: the
// announced media and every RTP packet in arrival order. The file is gzip:
// one JSON line with the media, then records of media (1 byte), length
// (2 bytes, big endian) and the RTP packet as received.

type capture struct {
	medias []rtsp.Media
	pkts   []capturedPkt
}

type capturedPkt struct {
	media int
	raw   []byte
}

func readCapture(t testing.TB, path string) *capture {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(zr)
	line, err := br.ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	c := &capture{}
	if err := json.Unmarshal(line, &c.medias); err != nil {
		t.Fatal(err)
	}
	for {
		var hdr [3]byte
		if _, err := io.ReadFull(br, hdr[:]); err == io.EOF {
			return c
		} else if err != nil {
			t.Fatal(err)
		}
		raw := make([]byte, binary.BigEndian.Uint16(hdr[1:]))
		if _, err := io.ReadFull(br, raw); err != nil {
			t.Fatal(err)
		}
		c.pkts = append(c.pkts, capturedPkt{media: int(hdr[0]), raw: raw})
	}
}

func writeCapture(path string, c *capture) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zw, _ := gzip.NewWriterLevel(f, gzip.BestCompression)
	js, err := json.Marshal(c.medias)
	if err != nil {
		return err
	}
	zw.Write(append(js, '\n'))
	for _, p := range c.pkts {
		zw.Write([]byte{byte(p.media), byte(len(p.raw) >> 8), byte(len(p.raw))})
		zw.Write(p.raw)
	}
	return zw.Close()
}

// captureHandler accepts any publisher and keeps its packets.
type captureHandler struct {
	mu     sync.Mutex
	c      capture
	closed chan struct{}
}

func (h *captureHandler) CheckPassword(context.Context, string, string) error { return nil }
func (h *captureHandler) DigestHA1(_ context.Context, user, realm string) (string, error) {
	sum := md5.Sum([]byte(user + ":" + realm + ":x"))
	return hex.EncodeToString(sum[:]), nil
}
func (h *captureHandler) Announce(_ context.Context, _, _ string, medias []rtsp.Media) (rtsp.Sink, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.c.medias = medias
	return h, nil
}
func (h *captureHandler) WriteRTP(media int, pkt *rtp.Packet, _ time.Time) error {
	raw, err := pkt.Marshal()
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.c.pkts = append(h.c.pkts, capturedPkt{media: media, raw: raw})
	return nil
}
func (h *captureHandler) WriteRTCP(int, []rtcp.Packet) {}
func (h *captureHandler) Close(error)                  { close(h.closed) }

// TestCaptureFFmpegRTP records ffmpeg's RTSP publish into the file named by
// VIGIL_CAPTURE_RTP, with the ffmpeg output arguments in VIGIL_CAPTURE_ARGS
// (JSON array). It regenerates the committed testdata; skipped otherwise.
func TestCaptureFFmpegRTP(t *testing.T) {
	out := os.Getenv("VIGIL_CAPTURE_RTP")
	if out == "" {
		t.Skip("set VIGIL_CAPTURE_RTP=file and VIGIL_CAPTURE_ARGS='[ffmpeg args]' to capture a publish")
	}
	var args []string
	if err := json.Unmarshal([]byte(os.Getenv("VIGIL_CAPTURE_ARGS")), &args); err != nil {
		t.Fatal(err)
	}
	h := &captureHandler{closed: make(chan struct{})}
	srv, err := rtsp.NewServer(rtsp.Config{Addr: "127.0.0.1:0", UDPRTPAddr: "127.0.0.1:0", UDPRTCPAddr: "127.0.0.1:0", Registerer: prometheus.NewRegistry(), Logger: testLogger(t)}, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	all := append([]string{"-hide_banner", "-loglevel", "error", "-nostdin"}, args...)
	all = append(all, "-f", "rtsp", fmt.Sprintf("rtsp://br:x@%s/cap", srv.Addr()))
	if o, err := exec.Command("ffmpeg", all...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, o)
	}
	select {
	case <-h.closed:
	case <-time.After(30 * time.Second):
		t.Fatal(errors.New("session did not end"))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := writeCapture(out, &h.c); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d packets, media %+v", len(h.c.pkts), h.c.medias)
}
