package ingest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// errBodyTimeout: the client stopped sending the body, or sends it slower
// than the minimum rate. Answered 408.
var errBodyTimeout = errors.New("request body too slow")

// deadlineBody puts a read deadline on the connection before every Read of
// a request body: now+idle, but never past hard. A client that stalls gets
// an error within idle, one that trickles within hard, and the upload's
// admission slot is released.
type deadlineBody struct {
	rc         *http.ResponseController
	body       io.ReadCloser
	idle       time.Duration
	hard       time.Time
	set, ended bool
}

func newDeadlineBody(w http.ResponseWriter, body io.ReadCloser, idle time.Duration, hard time.Time) *deadlineBody {
	return &deadlineBody{rc: http.NewResponseController(w), body: body, idle: idle, hard: hard}
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	if !b.ended {
		d := time.Now().Add(b.idle)
		if d.After(b.hard) {
			d = b.hard
		}
		// Not every ResponseWriter has a connection (httptest); then
		// there is nothing to bound.
		b.set = b.rc.SetReadDeadline(d) == nil || b.set
	}
	n, err := b.body.Read(p)
	switch {
	case err == io.EOF:
		b.clear()
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		b.ended = true
		err = fmt.Errorf("%w: %w", errBodyTimeout, err)
	}
	return n, err
}

func (b *deadlineBody) Close() error { return b.body.Close() }

// clear lifts the deadline once the body is complete: net/http keeps
// reading the connection in the background to notice a client that goes
// away, and an expired deadline there would cancel the request while
// storage still works on it.
func (b *deadlineBody) clear() {
	if b.set && !b.ended {
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	b.ended = true
}
