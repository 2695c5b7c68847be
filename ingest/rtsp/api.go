// Package rtsp is vigil's RTSP 1.0 (RFC 2326) ingest for publishers (Bridges):
// OPTIONS, ANNOUNCE, SETUP, RECORD, TEARDOWN, GET_PARAMETER and SET_PARAMETER,
// interleaved TCP and UDP transports, Basic and Digest authentication.
//
// The session layer is written in-house on pion/rtp, pion/rtcp and pion/sdp/v3
// because the module proxy this project builds from refuses gortsplib. Everything
// the rest of vigil sees is the small surface in this file (Media, Handler, Sink,
// the errors, Config, Server), so gortsplib/v4 can replace the session layer
// behind it once a registry serves it.
//
// How the session layer behaves:
//   - A session is one TCP connection: it ends with the connection (also with
//     the UDP transport, where the connection carries the keepalives), on
//     TEARDOWN, after IdleTimeout without a complete request or packet, on
//     malformed input (bad request line or header, oversized header or body,
//     bad SDP, truncated or empty interleaved frame, undecodable RTP), when
//     the Sink returns an error, and at shutdown. Sink.Close gets the reason.
//   - ANNOUNCE needs credentials: Basic (Handler.CheckPassword) or Digest
//     with MD5 (Handler.DigestHA1, or each of DigestHA1Set's). Digest nonces are stateless HMACs bound
//     to the connection and valid NonceTTL: a header captured on one
//     connection fails on any other, its uri must name the request's URL,
//     and with qop=auth nc must increase; an expired nonce with a correct
//     response gets 401 with stale=true. A 401 offers both schemes; ffmpeg
//     picks Digest. Five wrong answers on one connection close it; the
//     Limiter bounds failures per source and user across connections (503
//     with Retry-After, then close). Later requests on the connection are trusted.
//   - Until it authenticates, a connection is held apart from publishers: it
//     must authenticate within AuthTimeout, at most MaxUnauthenticatedPerIP
//     come from one address (more get 503 at once), at most
//     MaxUnauthenticated wait in all (a new one then closes the oldest), and
//     an interleaved "$" frame before authentication closes it.
//   - The stream id is the URL path without the leading "/", [a-zA-Z0-9_-]{1,64};
//     anything else is 400. CSeq must increase (400 otherwise).
//   - UDP: one shared RTP and one RTCP socket; datagrams are routed by their
//     source (the RTSP connection's IP and the client_port of SETUP), so a
//     publisher behind a NAT that rewrites ports must use TCP.
//   - Handler errors map to statuses: ErrUnauthorized 401, ErrForbidden 403,
//     ErrNotFound 404, ErrBusy 455 "Already Publishing", ErrUnsupported 415,
//     anything else 503. A publisher that authenticates while MaxSessions
//     authenticated sessions are open gets 503 "Session Limit Reached".
package rtsp

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"
)

// Media is one media section of the ANNOUNCEd SDP (parsed with pion/sdp/v3).
type Media struct {
	Type        string            // "video" or "audio"
	Codec       string            // rtpmap encoding name, upper-case: "H264", "H265", "MPEG4-GENERIC", "OPUS", ...
	PayloadType uint8             // RTP payload type
	ClockRate   uint32            // RTP clock rate
	Channels    int               // audio; 0 when absent
	Fmtp        map[string]string // keys lower-case: sprop-parameter-sets, sprop-vps, sprop-sps, sprop-pps, config, sizelength, ...
	Control     string            // a=control value as announced
}

// Handler is what the server asks; the recorder implements it. Methods are
// called concurrently for different sessions.
type Handler interface {
	// CheckPassword verifies Basic credentials (user = bridge id, password =
	// bridge token); ErrUnauthorized when they do not match.
	CheckPassword(ctx context.Context, user, password string) error
	// DigestHA1 returns hex MD5(user ":" realm ":" password) for Digest auth;
	// ErrUnauthorized when the user is unknown or has none.
	DigestHA1(ctx context.Context, user, realm string) (string, error)
	// Announce is called on ANNOUNCE after authentication, with the
	// authenticated user, the path without leading "/" (the stream id) and the
	// announced media. It authorises and reserves the stream (a second live
	// publisher is refused). The Sink receives the session's packets after
	// RECORD; Close is called exactly once, also when the session never reached
	// RECORD.
	Announce(ctx context.Context, user, path string, medias []Media) (Sink, error)
}

// DigestHA1Set is an optional Handler method: every HA1 a user may answer
// Digest with, so that a publisher switching passwords (a bridge whose
// token is being rotated has two during the grace) is not cut off. When
// the Handler has it, the server uses it instead of DigestHA1.
type DigestHA1Set interface {
	DigestHA1s(ctx context.Context, user, realm string) ([]string, error)
}

// Sink receives one publishing session. Calls for one session never overlap.
type Sink interface {
	// WriteRTP delivers an RTP packet of medias[media], in arrival order, with
	// the time it was received. pkt and its payload are only valid during the
	// call. A non-nil error ends the session with that reason.
	WriteRTP(media int, pkt *rtp.Packet, received time.Time) error
	// WriteRTCP delivers the RTCP packets of one compound packet of
	// medias[media] (sender reports carry NTP time).
	WriteRTCP(media int, pkts []rtcp.Packet)
	// Close ends the session: err is nil after TEARDOWN, otherwise why it
	// ended (disconnect, idle timeout, malformed input, server shutdown).
	Close(err error)
}

// Errors a Handler returns, mapped to RTSP status codes by the server. Any
// other error is answered 503 Service Unavailable and logged.
var (
	// ErrUnauthorized: 401 with a fresh challenge.
	ErrUnauthorized = errors.New("rtsp: unauthorized")
	// ErrForbidden: 403 (another bridge's stream).
	ErrForbidden = errors.New("rtsp: forbidden")
	// ErrNotFound: 404 (unknown or deleted stream).
	ErrNotFound = errors.New("rtsp: stream not found")
	// ErrBusy: 455 Method Not Valid in This State with the reason phrase
	// "Already Publishing" (the stream has a live publisher).
	ErrBusy = errors.New("rtsp: stream is already being published")
	// ErrUnsupported: 415 Unsupported Media Type (no H.264/H.265 video, or a
	// codec the recorder cannot keep).
	ErrUnsupported = errors.New("rtsp: unsupported media")
	// ErrShutdown is the reason given to Sink.Close when the server stops.
	ErrShutdown = errors.New("rtsp: server shutting down")
	// ErrIdle is the reason given to Sink.Close after the idle timeout.
	ErrIdle = errors.New("rtsp: session idle timeout")
)

// AuthLimiter limits failed authentications per source address and claimed
// identity (auth.Limiter implements it). Check comes before credentials are
// looked at; Fail logs (sampled) with attrs that carry no secret.
type AuthLimiter interface {
	Check(proto string, src netip.Addr, identity string) (retryAfter time.Duration, ok bool)
	Fail(ctx context.Context, proto, reason string, src netip.Addr, identity string, attrs ...slog.Attr)
	Succeed(src netip.Addr, identity string)
}

// Config configures a Server.
type Config struct {
	Addr        string // TCP listen address (--rtsp-addr)
	UDPRTPAddr  string // shared UDP RTP listener (even port); empty: UDP transport refused with 461
	UDPRTCPAddr string // shared UDP RTCP listener (RTP port + 1); required with UDPRTPAddr
	MaxSessions int    // authenticated sessions; beyond it a publisher gets 503 with a clear reason; 0 = unlimited
	// MaxUnauthenticated bounds the connections that have not authenticated
	// yet (default 128); when it is reached a new connection closes the
	// oldest of them. MaxUnauthenticatedPerIP bounds them per remote address
	// (default 8); more are answered 503 and closed.
	MaxUnauthenticated      int
	MaxUnauthenticatedPerIP int
	// AuthTimeout: a connection that has not authenticated within it is
	// closed (default 10 s).
	AuthTimeout time.Duration
	// NonceTTL: how long a Digest nonce is accepted (default 5 min).
	NonceTTL time.Duration
	// Limiter bounds failed authentications across connections and samples
	// their log lines; nil: only the per-connection limit, every failure logged.
	Limiter AuthLimiter
	// IdleTimeout: no RTSP request and no RTP/RTCP for this long closes the
	// session (default 60 s). It is also announced in the Session header.
	IdleTimeout time.Duration
	Realm       string // Digest/Basic realm (default "vigil")
	// MaxRequestBytes caps a request's header block and, separately, its body
	// (default 64 KiB each).
	MaxRequestBytes int
	Logger          *slog.Logger
	Registerer      prometheus.Registerer
}
