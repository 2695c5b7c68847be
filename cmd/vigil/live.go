package main

import (
	"flag"

	"github.com/vigilcloud/vigil/live"
)

// liveFlags bound low-latency live HLS: what the node holds of the streams
// it records, and how many live requests may wait at once.
type liveFlags struct {
	BufferBytes      int64
	MaxBlocked       int
	BlockedPerClient int
}

func (l *liveFlags) register(fs *flag.FlagSet) {
	fs.Int64Var(&l.BufferBytes, "live-buffer-bytes", 512<<20, "bytes of LL-HLS parts not yet stored that the node holds in memory; beyond it the oldest go (they are served once stored)")
	fs.IntVar(&l.MaxBlocked, "live-max-blocked", 4096, "live.m3u8 blocking reloads and part preloads waiting at once on the node; more get 429")
	fs.IntVar(&l.BlockedPerClient, "live-blocked-per-client", 64, "of those, how many one client (user, token) may hold")
}

// newLiveBuffer is the node's live window of the streams it records.
func (n *node) newLiveBuffer() *live.Buffer {
	return live.New(live.Config{MaxBytes: n.cfg.Live.BufferBytes, Registerer: n.reg})
}
