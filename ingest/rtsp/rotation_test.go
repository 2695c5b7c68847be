package rtsp

import (
	"context"
	"testing"
)

// rotatingHandler is a bridge in a token rotation's grace: it has a
// current and a previous password, and offers both HA1s (DigestHA1Set).
type rotatingHandler struct {
	*testHandler
	prev map[string]string
}

func (h *rotatingHandler) previous(user string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok := h.prev[user]
	return p, ok
}

func (h *rotatingHandler) CheckPassword(ctx context.Context, user, password string) error {
	if p, ok := h.previous(user); ok && p == password {
		return nil
	}
	return h.testHandler.CheckPassword(ctx, user, password)
}

func (h *rotatingHandler) DigestHA1s(ctx context.Context, user, realm string) ([]string, error) {
	ha1, err := h.DigestHA1(ctx, user, realm)
	if err != nil {
		return nil, err
	}
	out := []string{ha1}
	if p, ok := h.previous(user); ok {
		out = append(out, md5hex(user+":"+realm+":"+p))
	}
	return out, nil
}

func TestDigestAndBasicDuringTokenRotation(t *testing.T) {
	h := &rotatingHandler{testHandler: newTestHandler(), prev: map[string]string{"br": "old-token"}}
	h.announceErr = ErrNotFound // authenticated, then 404
	ts := startServer(t, Config{}, h)
	for _, tc := range []struct {
		pass   string
		status int
	}{{"token", 404}, {"old-token", 404}, {"other", 401}} {
		for _, basic := range []bool{false, true} {
			c := dial(t, ts.url("br", tc.pass, "cam1"))
			c.PreferBasic = basic
			err := c.Announce(context.Background(), []Media{h264Media()})
			if st := statusOf(t, err); st != tc.status {
				t.Fatalf("%s basic=%v: status %d, want %d", tc.pass, basic, st, tc.status)
			}
		}
	}
	// The grace ends: only the new token answers.
	h.mu.Lock()
	h.prev = nil
	h.mu.Unlock()
	for _, basic := range []bool{false, true} {
		c := dial(t, ts.url("br", "old-token", "cam1"))
		c.PreferBasic = basic
		if st := statusOf(t, c.Announce(context.Background(), []Media{h264Media()})); st != 401 {
			t.Fatalf("old token after the grace, basic=%v: status %d", basic, st)
		}
	}
	if _, _, basicN, digestN := h.snapshot(); basicN == 0 || digestN == 0 {
		t.Fatalf("basic %d, digest %d: both schemes must have been used", basicN, digestN)
	}
}
