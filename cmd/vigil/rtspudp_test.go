package main

import (
	"net"
	"strconv"
	"testing"
)

// The default UDP pair follows the RTSP port: 8000 for 8554 as before, and
// disjoint pairs for neighbouring RTSP ports, so nodes share a host.
func TestRTSPUDPDefaultPerRTSPPort(t *testing.T) {
	got := map[string]string{}
	for _, rtsp := range []string{"127.0.0.1:8554", "127.0.0.1:8551", "127.0.0.1:8552", "127.0.0.1:8553"} {
		rtp, rtcp, err := rtspUDPAddrs(nodeConfig{RTSPAddr: rtsp})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []string{rtp, rtcp} {
			if other, ok := got[a]; ok {
				t.Fatalf("RTSP %s and %s both default to UDP %s", rtsp, other, a)
			}
			got[a] = rtsp
		}
		if rtsp == "127.0.0.1:8554" && (rtp != "127.0.0.1:8000" || rtcp != "127.0.0.1:8001") {
			t.Errorf("RTSP 8554: UDP %s/%s, want 8000/8001", rtp, rtcp)
		}
	}
	// Out of range (or port 0): a free even/odd pair.
	for _, rtsp := range []string{"127.0.0.1:0", "127.0.0.1:554", "127.0.0.1:50000"} {
		rtp, rtcp, err := rtspUDPAddrs(nodeConfig{RTSPAddr: rtsp})
		if err != nil {
			t.Fatal(err)
		}
		_, p, _ := net.SplitHostPort(rtp)
		_, q, _ := net.SplitHostPort(rtcp)
		pn, _ := strconv.Atoi(p)
		qn, _ := strconv.Atoi(q)
		if pn == 0 || pn%2 != 0 || qn != pn+1 {
			t.Errorf("RTSP %s: UDP %s/%s, want an even port and the next", rtsp, rtp, rtcp)
		}
	}
	if rtp, rtcp, err := rtspUDPAddrs(nodeConfig{RTSPAddr: "127.0.0.1:8554", RTSPUDPAddr: "off"}); err != nil || rtp != "" || rtcp != "" {
		t.Errorf("off: %q %q %v", rtp, rtcp, err)
	}
}
