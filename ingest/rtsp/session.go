package rtsp

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// A session is one TCP connection. Publishers keep the RTSP connection open
// for the whole session (also with the UDP transport, where it carries the
// keepalives), so the session ends with it.
type session struct {
	s        *Server
	ctx      context.Context
	cancel   context.CancelFunc
	conn     net.Conn
	br       *bufio.Reader
	log      *slog.Logger
	remoteIP netip.Addr

	lastActivity atomic.Int64 // unix nanoseconds
	idle         *time.Timer
	authTimer    *time.Timer // closes the connection unless it authenticates in time
	connID       [16]byte    // random; Digest nonces are bound to it
	// authenticated is set (under Server.mu) once the connection has left
	// the unauthenticated pool.
	authenticated atomic.Bool
	closeOnce     sync.Once
	reasonMu      sync.Mutex
	reason        error // why another goroutine closed the connection

	// Owned by the reading goroutine.
	lastCSeq  int
	id        string
	user      string
	path      string
	medias    []Media
	tracks    []track
	channels  [256]int16 // interleaved channel -> media*2 (+1 for RTCP), -1 unused
	frameBuf  []byte
	announced bool
	authFails int
	lastNonce string // Digest qop=auth: the nonce whose nc was last seen
	lastNC    uint64

	recording atomic.Bool

	sinkMu     sync.Mutex // serialises Sink calls (the TCP reader and two UDP readers)
	sink       Sink
	sinkClosed bool
	pkt        rtp.Packet
}

type track struct {
	setup    bool
	tcp      bool
	seqStart bool
	lastSeq  uint16
}

var streamIDRe = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// newReader buffers 16 KiB: a publisher writes an access unit's packets
// back to back, and one read syscall per typical frame costs less CPU than
// a smaller buffer's several.
func newReader(c net.Conn) *bufio.Reader { return bufio.NewReaderSize(c, 16<<10) }

func newSession(ctx context.Context, s *Server, c net.Conn) *session {
	ctx, cancel := context.WithCancel(ctx)
	ss := &session{s: s, ctx: ctx, cancel: cancel, conn: c, br: newReader(c), lastCSeq: -1,
		log: s.log.With("remote", c.RemoteAddr().String())}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		ss.remoteIP = ap.Addr().Unmap()
	}
	for i := range ss.channels {
		ss.channels[i] = -1
	}
	_, _ = rand.Read(ss.connID[:])
	ss.touch()
	ss.idle = time.AfterFunc(s.cfg.IdleTimeout, ss.checkIdle)
	ss.authTimer = time.AfterFunc(s.cfg.AuthTimeout, func() {
		if !ss.authenticated.Load() {
			ss.s.m.refused.WithLabelValues("auth_timeout").Inc()
			ss.close(errAuthTimeout)
		}
	})
	return ss
}

func (ss *session) touch() { ss.lastActivity.Store(time.Now().UnixNano()) }

func (ss *session) checkIdle() {
	since := time.Since(time.Unix(0, ss.lastActivity.Load()))
	if since >= ss.s.cfg.IdleTimeout {
		ss.close(ErrIdle)
		return
	}
	ss.idle.Reset(ss.s.cfg.IdleTimeout - since)
}

// close ends the session from another goroutine: the reader sees the
// closed connection and finishes with reason.
func (ss *session) close(reason error) {
	ss.closeOnce.Do(func() {
		ss.reasonMu.Lock()
		ss.reason = reason
		ss.reasonMu.Unlock()
		ss.conn.Close()
	})
}

var (
	errDisconnected        = errors.New("rtsp: publisher disconnected")
	errTooManyAuthFailures = errors.New("rtsp: too many failed authentication attempts")
	errAuthTimeout         = errors.New("rtsp: not authenticated within the deadline")
	errDataBeforeAuth      = errors.New("rtsp: interleaved data before authentication")
	errEvicted             = errors.New("rtsp: unauthenticated connection closed to make room for a newer one")
	errAuthThrottled       = errors.New("rtsp: too many failed authentications from this address or for this user")
	errSessionLimit        = errors.New("rtsp: session limit reached")
)

const maxAuthFailures = 5

func (ss *session) run() {
	err := ss.serve()
	ss.idle.Stop()
	ss.authTimer.Stop()
	ss.closeOnce.Do(func() { ss.conn.Close() })
	ss.reasonMu.Lock()
	if ss.reason != nil {
		err = ss.reason
	}
	ss.reasonMu.Unlock()
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = errDisconnected
	}
	ss.s.removeSession(ss)
	ss.cancel()
	ss.sinkMu.Lock()
	if ss.sink != nil && !ss.sinkClosed {
		ss.sinkClosed = true
		ss.sink.Close(err)
	}
	ss.sinkMu.Unlock()
	switch {
	case !ss.authenticated.Load():
		// Never authenticated: whoever it was, one line per connection
		// would let anyone fill the log (failures are logged, sampled, by the limiter).
		ss.log.Debug("rtsp: unauthenticated connection ended", "reason", err)
	case err == nil:
		ss.log.Info("rtsp: session ended by TEARDOWN", "path", ss.path, "session", ss.id)
	case errors.Is(err, errDisconnected) || errors.Is(err, ErrShutdown):
		ss.log.Info("rtsp: session ended", "path", ss.path, "session", ss.id, "reason", err)
	default:
		ss.log.Warn("rtsp: session closed", "path", ss.path, "session", ss.id, "reason", err)
	}
}

// serve reads requests and interleaved frames until the session ends; nil
// means TEARDOWN.
func (ss *session) serve() error {
	limit := ss.s.cfg.MaxRequestBytes
	for {
		b, err := ss.br.Peek(1)
		if err != nil {
			return err
		}
		if b[0] == '$' {
			if !ss.authenticated.Load() {
				// Nobody may make the server read media it will not keep.
				ss.s.m.refused.WithLabelValues("data_before_auth").Inc()
				return errDataBeforeAuth
			}
			_, _ = ss.br.Discard(1)
			ch, payload, err := readInterleaved(ss.br, &ss.frameBuf)
			if err != nil {
				ss.s.m.refused.WithLabelValues("malformed").Inc()
				return err
			}
			ss.touch()
			if err := ss.handleFrame(ch, payload); err != nil {
				return err
			}
			continue
		}
		req, err := readRequest(ss.br, limit)
		if err != nil {
			switch {
			case errors.Is(err, errHeaderTooLong):
				ss.writeResponse("", &response{Status: 400, Reason: "Request Header Too Large"})
			case errors.Is(err, errBodyTooLarge):
				ss.writeResponse("", &response{Status: 413})
			case errors.Is(err, errMalformed):
				ss.writeResponse("", &response{Status: 400})
			default:
				return err // disconnect or truncated request
			}
			ss.s.m.refused.WithLabelValues("malformed").Inc()
			return err
		}
		ss.touch()
		resp, done, endErr := ss.handle(req)
		if resp != nil {
			if err := ss.writeResponse(req.get("Cseq"), resp); err != nil {
				return err
			}
		}
		if done {
			return endErr
		}
	}
}

func (ss *session) writeResponse(cseq string, r *response) error {
	_ = ss.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := ss.conn.Write(r.marshal(cseq))
	if err != nil {
		return fmt.Errorf("rtsp: write response: %w", err)
	}
	return nil
}

func (ss *session) handleFrame(ch byte, payload []byte) error {
	m := ss.s.m
	m.tcpBytes.Add(float64(len(payload)))
	if !ss.recording.Load() || ss.channels[ch] < 0 {
		// Before RECORD, or a channel that was never set up: not ours to keep.
		return nil
	}
	media, isRTCP := int(ss.channels[ch]/2), ss.channels[ch]%2 == 1
	if isRTCP {
		m.tcpRTCP.Inc()
		ss.deliverRTCP(media, payload)
		return nil
	}
	m.tcpRTP.Inc()
	return ss.deliverRTP(media, payload)
}

func (ss *session) deliverRTP(media int, buf []byte) error {
	now := time.Now()
	ss.sinkMu.Lock()
	defer ss.sinkMu.Unlock()
	if ss.sink == nil || ss.sinkClosed {
		return nil
	}
	if err := ss.pkt.Unmarshal(buf); err != nil {
		return fmt.Errorf("%w: RTP packet of %d bytes on media %d: %v", errMalformed, len(buf), media, err)
	}
	tr := &ss.tracks[media]
	if !tr.seqStart {
		tr.seqStart, tr.lastSeq = true, ss.pkt.SequenceNumber
	} else if d := ss.pkt.SequenceNumber - tr.lastSeq; d != 0 && d < 0x8000 {
		if d > 1 {
			ss.s.m.lost.Add(float64(d - 1))
		}
		tr.lastSeq = ss.pkt.SequenceNumber
	} // else a duplicate or a late (reordered) packet: delivered, not counted as loss
	if err := ss.sink.WriteRTP(media, &ss.pkt, now); err != nil {
		return fmt.Errorf("rtsp: sink: %w", err)
	}
	return nil
}

// deliverRTCP passes a compound RTCP packet on. RTCP is advisory, so one
// that does not parse is dropped (and logged) rather than ending the session.
func (ss *session) deliverRTCP(media int, buf []byte) {
	pkts, err := rtcp.Unmarshal(buf)
	if err != nil {
		ss.s.log.Debug("rtsp: dropping malformed RTCP", "media", media, "err", err)
		return
	}
	ss.sinkMu.Lock()
	defer ss.sinkMu.Unlock()
	if ss.sink == nil || ss.sinkClosed {
		return
	}
	ss.sink.WriteRTCP(media, pkts)
}

const publicMethods = "OPTIONS, ANNOUNCE, SETUP, RECORD, TEARDOWN, GET_PARAMETER, SET_PARAMETER"

// handle answers one request. done ends the session after the response is
// written, with endErr as the reason (nil for TEARDOWN).
func (ss *session) handle(req *request) (resp *response, done bool, endErr error) {
	cs := req.get("Cseq")
	cseq, err := strconv.Atoi(cs)
	if err != nil || cseq < 0 {
		return &response{Status: 400, Reason: "Missing Or Invalid CSeq"}, false, nil
	}
	if cseq <= ss.lastCSeq {
		// Responses are matched to requests by CSeq; a repeated or lower one
		// would make that ambiguous.
		return &response{Status: 400, Reason: "CSeq Not Increasing"}, false, nil
	}
	ss.lastCSeq = cseq
	if sid := req.get("Session"); sid != "" && ss.id != "" {
		if id, _, _ := strings.Cut(sid, ";"); strings.TrimSpace(id) != ss.id {
			return &response{Status: 454}, false, nil
		}
	}
	switch req.Method {
	case "OPTIONS":
		r := &response{Status: 200}
		r.add("Public", publicMethods)
		return r, false, nil
	case "ANNOUNCE":
		return ss.announce(req)
	case "SETUP":
		return ss.setup(req), false, nil
	case "RECORD":
		if !ss.announced || !ss.anySetup() {
			return &response{Status: 455, Reason: "RECORD Before SETUP"}, false, nil
		}
		if ss.recording.Load() {
			return &response{Status: 455, Reason: "Already Recording"}, false, nil
		}
		ss.recording.Store(true)
		ss.log.Info("rtsp: recording", "path", ss.path, "user", ss.user, "session", ss.id)
		return ss.withSession(&response{Status: 200}), false, nil
	case "TEARDOWN":
		return ss.withSession(&response{Status: 200}), true, nil
	case "GET_PARAMETER", "SET_PARAMETER":
		return ss.withSession(&response{Status: 200}), false, nil
	case "DESCRIBE", "PLAY", "PAUSE", "REDIRECT":
		r := &response{Status: 405, Reason: "Method Not Allowed (publish only)"}
		r.add("Allow", publicMethods)
		return r, false, nil
	}
	r := &response{Status: 501}
	r.add("Public", publicMethods)
	return r, false, nil
}

func (ss *session) withSession(r *response) *response {
	if ss.id != "" {
		r.add("Session", fmt.Sprintf("%s;timeout=%d", ss.id, int(ss.s.cfg.IdleTimeout/time.Second)))
	}
	return r
}

func (ss *session) anySetup() bool {
	for _, t := range ss.tracks {
		if t.setup {
			return true
		}
	}
	return false
}

// streamPath returns the stream id of an rtsp:// URL (the path without the
// leading "/") or an error when it is not a valid id.
func streamPath(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("bad URL: %v", err)
	}
	p := strings.TrimPrefix(u.Path, "/")
	if !streamIDRe.MatchString(p) {
		return "", fmt.Errorf("stream id %q is not [a-zA-Z0-9_-]{1,64}", truncate(p, 80))
	}
	return p, nil
}

func (ss *session) announce(req *request) (*response, bool, error) {
	if ss.announced {
		return &response{Status: 455, Reason: "Already Announced"}, false, nil
	}
	if !ss.authenticated.Load() {
		// Refused before the credentials are looked at, so a refused guess
		// learns nothing.
		if retry, ok := ss.s.lim.Check("rtsp", ss.remoteIP, claimedUser(req.get("Authorization"))); !ok {
			ss.s.m.refused.WithLabelValues("auth_throttled").Inc()
			r := &response{Status: 503, Reason: "Too Many Failed Authentications"}
			r.add("Retry-After", strconv.Itoa(max(1, int(math.Ceil(retry.Seconds())))))
			return r, true, errAuthThrottled
		}
	}
	user, challenge := ss.authenticate(req)
	if challenge != nil {
		if req.get("Authorization") != "" {
			// Bound password guessing: a few wrong answers end the connection.
			if ss.authFails++; ss.authFails >= maxAuthFailures {
				return challenge, true, errTooManyAuthFailures
			}
		}
		return challenge, false, nil
	}
	if !ss.s.promote(ss) {
		ss.s.m.refused.WithLabelValues("session_limit").Inc()
		ss.log.Warn("rtsp: session limit reached, refusing", "user", user, "max_sessions", ss.s.cfg.MaxSessions)
		r := &response{Status: 503, Reason: "Session Limit Reached",
			Body: fmt.Appendf(nil, "this node accepts at most %d RTSP sessions\n", ss.s.cfg.MaxSessions)}
		r.add("Content-Type", "text/plain")
		return r, true, errSessionLimit
	}
	ss.s.lim.Succeed(ss.remoteIP, user)
	path, err := streamPath(req.URL)
	if err != nil {
		ss.s.m.refused.WithLabelValues("bad_path").Inc()
		ss.log.Info("rtsp: ANNOUNCE refused", "user", user, "url", truncate(redactURL(req.URL), 200), "reason", err)
		return &response{Status: 400, Reason: "Invalid Stream Id"}, false, nil
	}
	if ct := req.get("Content-Type"); ct != "" && !strings.EqualFold(strings.TrimSpace(strings.Split(ct, ";")[0]), "application/sdp") {
		return &response{Status: 415, Reason: "Content-Type Must Be application/sdp"}, false, nil
	}
	medias, err := ParseSDP(req.Body)
	if err != nil {
		ss.s.m.refused.WithLabelValues("malformed").Inc()
		return &response{Status: 400, Reason: "Malformed SDP"}, true, err
	}
	sink, err := ss.s.h.Announce(ss.ctx, user, path, medias)
	if err != nil {
		status, reason, label := statusFor(err)
		ss.s.m.refused.WithLabelValues(label).Inc()
		ss.log.Info("rtsp: ANNOUNCE refused", "user", user, "path", path, "status", status, "err", err)
		r := &response{Status: status, Reason: reason}
		if status == 401 {
			ss.addChallenges(r, false)
		}
		return r, false, nil
	}
	ss.sinkMu.Lock()
	ss.sink = sink
	ss.sinkMu.Unlock()
	ss.announced, ss.user, ss.path, ss.medias = true, user, path, medias
	ss.tracks = make([]track, len(medias))
	ss.log = ss.log.With("path", path, "user", user)
	ss.log.Info("rtsp: announced", "medias", len(medias))
	return &response{Status: 200}, false, nil
}

// statusFor maps a Handler error to a status, reason phrase and the
// refused-sessions metric label.
func statusFor(err error) (int, string, string) {
	switch {
	case errors.Is(err, ErrUnauthorized):
		return 401, "", "unauthorized"
	case errors.Is(err, ErrForbidden):
		return 403, "", "forbidden"
	case errors.Is(err, ErrNotFound):
		return 404, "Stream Not Found", "not_found"
	case errors.Is(err, ErrBusy):
		return 455, "Already Publishing", "busy"
	case errors.Is(err, ErrUnsupported):
		return 415, "Unsupported Media", "unsupported"
	}
	return 503, "", "unavailable"
}

func (ss *session) addChallenges(r *response, stale bool) {
	for _, c := range challenges(ss.s.cfg.Realm, ss.s.nonces.make(time.Now(), ss.connID[:]), stale) {
		r.add("WWW-Authenticate", c)
	}
}

// authenticate checks the Authorization header; on failure it returns the
// 401 (with fresh challenges) or 503 response to send. Failures go to the
// limiter, which counts them and logs a sample; the user name is logged
// only when it names a known user (a password typed as the user is not).
func (ss *session) authenticate(req *request) (string, *response) {
	challenge := func(stale bool) (string, *response) {
		r := &response{Status: 401}
		ss.addChallenges(r, stale)
		return "", r
	}
	fail := func(reason, detail, user string) (string, *response) {
		ss.s.m.refused.WithLabelValues("unauthorized").Inc()
		ss.s.lim.Fail(ss.ctx, "rtsp", reason, ss.remoteIP, user, slog.String("detail", detail), ss.userAttr(user))
		return challenge(false)
	}
	h := req.get("Authorization")
	if h == "" {
		return challenge(false)
	}
	cred, err := parseAuthorization(h)
	if err != nil {
		return fail("malformed", err.Error(), "")
	}
	var herr error
	switch cred.Scheme {
	case "basic":
		herr = ss.s.h.CheckPassword(ss.ctx, cred.User, cred.Password)
	case "digest":
		p := cred.Params
		if p["realm"] != ss.s.cfg.Realm {
			return fail("digest_params", "digest realm mismatch", cred.User)
		}
		if a := p["algorithm"]; a != "" && !strings.EqualFold(a, "MD5") {
			return fail("digest_params", "digest algorithm "+truncate(a, 20), cred.User)
		}
		if q := p["qop"]; q != "" && q != "auth" {
			return fail("digest_params", "digest qop "+truncate(q, 20), cred.User)
		}
		valid, stale := ss.s.nonces.check(p["nonce"], time.Now(), ss.connID[:])
		if !valid {
			// Forged, or issued on another connection: a replay.
			return fail("unknown_nonce", "digest nonce not issued on this connection", cred.User)
		}
		if !digestURIMatches(p["uri"], req.URL) {
			return fail("uri_mismatch", "digest uri does not name the request URL", cred.User)
		}
		var ha1s []string
		ha1s, herr = ss.s.digestHA1s(ss.ctx, cred.User)
		if herr == nil && !digestMatches(ha1s, strings.ToLower(p["response"]), req.Method, p) {
			herr = ErrUnauthorized
		}
		if herr == nil && stale {
			// RFC 7616 3.3: the right answer to an expired nonce; the
			// client retries with the new one without asking its user.
			return challenge(true)
		}
		if herr == nil && p["qop"] != "" {
			nc, err := strconv.ParseUint(p["nc"], 16, 32)
			if err != nil || p["cnonce"] == "" || (p["nonce"] == ss.lastNonce && nc <= ss.lastNC) {
				return fail("nonce_count", "digest nc missing or not increasing", cred.User)
			}
			ss.lastNonce, ss.lastNC = p["nonce"], nc
		}
	}
	if herr != nil {
		if errors.Is(herr, ErrUnauthorized) {
			return fail("wrong_credentials", "wrong credentials ("+cred.Scheme+")", cred.User)
		}
		ss.s.m.refused.WithLabelValues("unavailable").Inc()
		ss.log.Warn("rtsp: credential check failed", ss.userAttr(cred.User), "err", herr)
		return "", &response{Status: 503, Reason: "Credential Check Unavailable"}
	}
	return cred.User, nil
}

// userAttr is the log attribute of a claimed user name: the name when it
// is a known user, otherwise a short SHA-256 fingerprint (a client that
// swapped user and password sends its token as the user).
func (ss *session) userAttr(user string) slog.Attr {
	if user == "" {
		return slog.Attr{}
	}
	if _, err := ss.s.h.DigestHA1(ss.ctx, user, ss.s.cfg.Realm); err == nil {
		return slog.String("user", user)
	}
	sum := sha256.Sum256([]byte(user))
	return slog.String("user_sha256", hex.EncodeToString(sum[:6]))
}

// claimedUser is the user an Authorization header names, unverified; ""
// when there is none.
func claimedUser(h string) string {
	if h == "" {
		return ""
	}
	cred, err := parseAuthorization(h)
	if err != nil {
		return ""
	}
	return cred.User
}

// mediaFor finds the announced media a SETUP URL names through its control
// attribute (relative to the stream URL, or absolute).
func (ss *session) mediaFor(raw string) int {
	u, err := url.Parse(raw)
	if err != nil {
		return -1
	}
	p := strings.Trim(u.Path, "/")
	for i, m := range ss.medias {
		ctl := m.Control
		if strings.HasPrefix(strings.ToLower(ctl), "rtsp://") {
			if cu, err := url.Parse(ctl); err == nil && strings.Trim(cu.Path, "/") == p {
				return i
			}
			continue
		}
		if ctl == "" || ctl == "*" {
			if len(ss.medias) == 1 && p == ss.path {
				return i
			}
			continue
		}
		if p == ss.path+"/"+strings.Trim(ctl, "/") {
			return i
		}
	}
	return -1
}

func (ss *session) setup(req *request) *response {
	if !ss.announced {
		return &response{Status: 455, Reason: "SETUP Before ANNOUNCE"}
	}
	if ss.recording.Load() {
		return &response{Status: 455, Reason: "SETUP While Recording"}
	}
	media := ss.mediaFor(req.URL)
	if media < 0 {
		return &response{Status: 404, Reason: "Unknown Track"}
	}
	if ss.tracks[media].setup {
		return &response{Status: 455, Reason: "Track Already Set Up"}
	}
	var chosen *transportSpec
	var why string
	for _, spec := range strings.Split(req.get("Transport"), ",") {
		t, err := parseTransport(strings.TrimSpace(spec))
		if err != nil {
			why = err.Error()
			continue
		}
		switch {
		case t.Multicast:
			why = "multicast is not supported"
		case t.Mode != "" && t.Mode != "record":
			why = "mode must be record"
		case t.TCP:
			if t.Interleave[0] < 0 {
				t.Interleave = ss.freeChannels()
			}
			if t.Interleave[0] < 0 || ss.channels[t.Interleave[0]] >= 0 || ss.channels[t.Interleave[1]] >= 0 || t.Interleave[0] == t.Interleave[1] {
				why = "interleaved channels in use"
				continue
			}
			chosen = &t
		case ss.s.rtpConn == nil:
			why = "UDP transport is not enabled on this server"
		case t.ClientPort[0] <= 0 || t.ClientPort[1] <= 0:
			why = "UDP transport needs client_port"
		default:
			if err := ss.s.registerUDP(ss, media, ss.remoteIP, t.ClientPort); err != nil {
				why = err.Error()
				continue
			}
			chosen = &t
		}
		if chosen != nil {
			break
		}
	}
	if chosen == nil {
		ss.log.Info("rtsp: SETUP refused", "transport", truncate(req.get("Transport"), 200), "reason", why)
		return &response{Status: 461}
	}
	if ss.id == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		ss.id = hex.EncodeToString(b[:])
	}
	tr := &ss.tracks[media]
	tr.setup, tr.tcp = true, chosen.TCP
	r := &response{Status: 200}
	if chosen.TCP {
		ss.channels[chosen.Interleave[0]] = int16(media * 2)
		ss.channels[chosen.Interleave[1]] = int16(media*2 + 1)
		r.add("Transport", fmt.Sprintf("RTP/AVP/TCP;unicast;interleaved=%d-%d;mode=record", chosen.Interleave[0], chosen.Interleave[1]))
	} else {
		rtpA, rtcpA := ss.s.UDPAddrs()
		r.add("Transport", fmt.Sprintf("RTP/AVP/UDP;unicast;client_port=%d-%d;server_port=%d-%d;mode=record",
			chosen.ClientPort[0], chosen.ClientPort[1], rtpA.(*net.UDPAddr).Port, rtcpA.(*net.UDPAddr).Port))
	}
	return ss.withSession(r)
}

func (ss *session) freeChannels() [2]int {
	for c := 0; c+1 < len(ss.channels); c += 2 {
		if ss.channels[c] < 0 && ss.channels[c+1] < 0 {
			return [2]int{c, c + 1}
		}
	}
	return [2]int{-1, -1}
}
