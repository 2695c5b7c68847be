package rtsp

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// ffmpegSDP is what ffmpeg 7 announces for H.265 + AAC (trimmed parameter sets).
const ffmpegSDP = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\na=tool:libavformat 61.7.100\r\n" +
	"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\na=fmtp:96 sprop-vps=QAEMAf//AWAAAAMAkAAAAwAAAwA8lZgJ; sprop-sps=QgEBAWAAAAMAkAAAAwAAAwA8oAoIDxZZUpKQU=; sprop-pps=RAHBcrRiQA==\r\na=control:streamid=0\r\n" +
	"m=audio 0 RTP/AVP 97\r\nb=AS:128\r\na=rtpmap:97 MPEG4-GENERIC/44100/1\r\na=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=1208\r\na=control:streamid=1\r\n"

func TestParseSDPFFmpeg(t *testing.T) {
	ms, err := ParseSDP([]byte(ffmpegSDP))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Codec != "H265" || ms[0].Fmtp["sprop-pps"] != "RAHBcrRiQA==" || ms[0].Control != "streamid=0" ||
		ms[1].Codec != "MPEG4-GENERIC" || ms[1].Channels != 1 || ms[1].Fmtp["config"] != "1208" || ms[1].Fmtp["sizelength"] != "13" {
		t.Fatalf("%+v", ms)
	}
	// The client's SDP round-trips.
	in := []Media{h264Media(), {Type: "audio", Codec: "OPUS", PayloadType: 111, ClockRate: 48000, Channels: 2, Fmtp: map[string]string{}}}
	out, err := ParseSDP(MarshalSDP(in))
	if err != nil || len(out) != 2 || out[0].Fmtp["sprop-parameter-sets"] != in[0].Fmtp["sprop-parameter-sets"] || out[1].Channels != 2 || out[1].Control != "trackID=1" {
		t.Fatalf("%v %+v", err, out)
	}
	for _, bad := range []string{"", "v=0\r\n", "v=0\r\no=- 0 0 IN IP4 1.2.3.4\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n", // no rtpmap
		"v=0\r\no=- 0 0 IN IP4 1.2.3.4\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 300\r\n",
		"v=0\r\no=- 0 0 IN IP4 1.2.3.4\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/0\r\n"} {
		if _, err := ParseSDP([]byte(bad)); err == nil {
			t.Fatalf("accepted %q", bad)
		}
	}
}

func FuzzParseSDP(f *testing.F) {
	f.Add([]byte(ffmpegSDP))
	f.Add(MarshalSDP([]Media{h264Media()}))
	f.Add([]byte("v=0\r\no=- 0 0 IN IP4 1.2.3.4\r\ns=x\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := ParseSDP(b)
		if err != nil {
			return
		}
		if len(ms) == 0 || len(ms) > maxMedias {
			t.Fatalf("%d medias", len(ms))
		}
		for _, m := range ms {
			if m.Codec == "" || m.ClockRate == 0 || m.PayloadType > 127 {
				t.Fatalf("incomplete media %+v", m)
			}
		}
	})
}

func FuzzReadRequest(f *testing.F) {
	f.Add([]byte("OPTIONS rtsp://h/a RTSP/1.0\r\nCSeq: 1\r\n\r\n"))
	f.Add([]byte("ANNOUNCE rtsp://h/a RTSP/1.0\r\nCSeq: 2\r\nContent-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"))
	f.Add([]byte("SETUP rtsp://h/a/trackID=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"))
	f.Add([]byte("\r\n\r\nX y RTSP/1.0\r\nA:\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(b), 64)
		for i := 0; i < 8; i++ {
			req, err := readRequest(br, 1024)
			if err != nil {
				return
			}
			if len(req.Body) > 1024 || req.Method == "" || req.URL == "" {
				t.Fatalf("bad request accepted: %+v", req)
			}
			_, _ = parseTransport(req.get("Transport"))
			_, _ = parseAuthorization(req.get("Authorization"))
			_, _ = streamPath(req.URL)
		}
	})
}

func FuzzReadInterleaved(f *testing.F) {
	f.Add([]byte("\x00\x00\x04abcd"))
	f.Add([]byte("\x01\x00\x00"))
	f.Add([]byte("\x02\xff\xffshort"))
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReader(bytes.NewReader(b))
		var buf []byte
		for {
			_, p, err := readInterleaved(br, &buf)
			if err != nil {
				return
			}
			if len(p) == 0 || len(p) > maxInterleavedSize {
				t.Fatalf("payload of %d bytes", len(p))
			}
		}
	})
}

// FuzzSession feeds arbitrary bytes to a whole session (requests, frames,
// state machine) after a valid ANNOUNCE, SETUP and RECORD prefix, with the
// test handler behind it. It must never panic or hang.
func FuzzSession(f *testing.F) {
	h := newTestHandler()
	s, err := NewServer(Config{Addr: "127.0.0.1:0", UDPRTPAddr: "127.0.0.1:0", UDPRTCPAddr: "127.0.0.1:0", IdleTimeout: 5 * time.Second}, h)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(s.closeListeners)
	sdp := MarshalSDP([]Media{h264Media()})
	basic := "Authorization: Basic YnI6dG9rZW4=\r\n"
	prefix := "ANNOUNCE rtsp://h/cam RTSP/1.0\r\nCSeq: 1\r\n" + basic + "Content-Length: " + strconv.Itoa(len(sdp)) + "\r\n\r\n" + string(sdp) +
		"SETUP rtsp://h/cam/trackID=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n" +
		"RECORD rtsp://h/cam RTSP/1.0\r\nCSeq: 3\r\n\r\n"
	f.Add([]byte("$\x00\x00\x0c\x80\x60\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01"))
	f.Add([]byte("$\x01\x00\x08\x80\xc8\x00\x01\x00\x00\x00\x01"))
	f.Add([]byte("SETUP rtsp://h/cam/trackID=0 RTSP/1.0\r\nCSeq: 4\r\nTransport: RTP/AVP;client_port=5000-5001\r\n\r\n"))
	f.Add([]byte("TEARDOWN rtsp://h/cam RTSP/1.0\r\nCSeq: 9\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		client, server := net.Pipe()
		ss := newSession(context.Background(), s, server)
		s.mu.Lock()
		s.sessions[ss] = struct{}{}
		s.mu.Unlock()
		s.m.sessions.Inc()
		done := make(chan struct{})
		go func() { defer close(done); ss.run() }()
		go func() { _, _ = io.Copy(io.Discard, client) }()
		_, _ = client.Write(append([]byte(prefix), b...))
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("session did not end")
		}
	})
}
