package accounts

import (
	"context"
	"fmt"
)

// StreamFinder looks a stream up (*Registry, or a caller's stand-in).
type StreamFinder interface {
	Stream(ctx context.Context, id string) (Stream, error)
}

// AcceptsData is the one answer to "may this stream take data?": it
// returns the live stream id names, or an error wrapping ErrNotFound when
// the stream is unknown or deleted. Any other error means the registry
// cannot say; the caller must not take that for a deletion.
func AcceptsData(ctx context.Context, reg StreamFinder, id string) (Stream, error) {
	st, err := reg.Stream(ctx, id)
	switch {
	case err != nil:
		return Stream{}, err
	case st.DeletedAt != nil:
		return Stream{}, fmt.Errorf("accounts: stream %s deleted: %w", id, ErrNotFound)
	}
	return st, nil
}

// StillAcceptsData re-checks data taken for st (AcceptsData's answer
// earlier): it also wraps ErrNotFound when st was deleted and created again
// with the same ids since, as the data belongs to the incarnation gone.
func StillAcceptsData(ctx context.Context, reg StreamFinder, st Stream) error {
	cur, err := AcceptsData(ctx, reg, st.ID)
	if err != nil {
		return err
	}
	if cur.Account != st.Account || cur.Camera != st.Camera || !cur.RegisteredAt.Equal(st.RegisteredAt) {
		return fmt.Errorf("accounts: stream %s was created again: %w", st.ID, ErrNotFound)
	}
	return nil
}
