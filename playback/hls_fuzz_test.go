package playback

import (
	"bytes"
	"net/url"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/auth"
)

func FuzzFindMoof(f *testing.F) {
	f.Add([]byte("\x00\x00\x00\x10ftypisom\x00\x00\x00\x00\x00\x00\x00\x08moof"))
	f.Add([]byte("\x00\x00\x00\x01moov\x00\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x08moof"))
	f.Add([]byte("\x00\x00\x00\x00mdat"))
	f.Add([]byte("\x00\x00\x00\x04ftyp"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var init bytes.Buffer
		off, _, err := findMoof(bytes.NewReader(b), int64(len(b)), &init)
		if err == nil && (off < 0 || off+8 > int64(len(b)) || string(b[off+4:off+8]) != "moof") {
			t.Fatalf("offset %d is not a moof in %x", off, b)
		}
		if err == nil && !bytes.Equal(init.Bytes(), b[:off]) {
			t.Fatalf("init section %x, want %x", init.Bytes(), b[:off])
		}
	})
}

func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{"recordings", "playlist.m3u8", "segments/1", "segments/1/init.mp4", "segments/2025-06-01T12:00:00Z/media.m4s",
		"segments/%31/init.mp4", "segments//init.mp4", "segments/1/x", "clip.mp4", "live.m3u8"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rt, err := parseRoute(s)
		if err != nil && rt.kind != routeNone {
			t.Fatalf("error with a route: %v", err)
		}
		if (rt.kind == routeSegment || rt.kind == routeInit || rt.kind == routeMedia) && rt.start < 0 {
			t.Fatalf("negative start %d from %q", rt.start, s)
		}
	})
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-0", "bytes=-5", "bytes=5-", "bytes=1-2,3-4", "bytes=9-3", "bytes=-0", "items=0-1"} {
		f.Add(s, int64(1000))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			size = -size
		}
		if size < 0 {
			return
		}
		off, n, ok, sat := parseRange(h, size)
		if ok && sat && (off < 0 || n <= 0 || off+n > size) {
			t.Fatalf("%q on %d: offset %d length %d", h, size, off, n)
		}
	})
}

func FuzzVerifySignature(f *testing.F) {
	s := signer{key: DeriveURLKey("k")}
	now := time.Unix(1_700_000_000, 0)
	user := auth.Principal{Kind: auth.User, ID: "u1", Account: "a1", Role: "user", TokenID: "t1"}
	q, _ := s.query("/v1/streams/s1/segments/1", user, now.Add(time.Hour))
	v, _ := url.ParseQuery(q)
	exps, by, sig := v.Get(paramExp), v.Get(paramBy), v.Get(paramSig)
	f.Add("/v1/streams/s1/segments/1", exps, by, sig)
	f.Add("/v1/streams/s1/segments/2", exps, by, sig)
	f.Add("/v1/streams/s1/segments/1", exps, "user.u1.a1.admin.t1", sig)
	f.Add("/v1/streams/s1/segments/1", exps, "operator", sig)
	f.Add("", "", "", "")
	f.Fuzz(func(t *testing.T, path, exp, b, sg string) {
		p, err := s.verify(path, exp, &b, sg, now)
		if err == nil && (path != "/v1/streams/s1/segments/1" || b != by || sg != sig || p != user) {
			t.Fatalf("accepted %q %q %q %q as %+v", path, exp, b, sg, p)
		}
	})
}
