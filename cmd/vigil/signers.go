package main

import (
	"context"
	"errors"

	"github.com/vigilcloud/vigil/access"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/playback"
)

// signers checks the signer of a playback URL in access (playback.Signers).
// access keys tokens by hash and a URL carries only the token id, so this
// walks the user's tokens; an access.Registry.PrincipalByTokenID would make
// it a map lookup.
type signers struct{ acc *access.Registry }

var _ playback.Signers = signers{}

func (s signers) SignerPrincipal(ctx context.Context, user, tokenID string) (auth.Principal, error) {
	u, err := s.acc.User(ctx, user)
	switch {
	case errors.Is(err, cluster.ErrNotFound):
		return auth.Principal{}, auth.ErrUnknownToken
	case err != nil:
		return auth.Principal{}, err
	}
	for _, t := range s.acc.Tokens(ctx, user) { // live ones only
		if t.ID == tokenID {
			return auth.Principal{Kind: auth.User, ID: u.ID, Account: u.Account, Role: u.Role, TokenID: t.ID}, nil
		}
	}
	return auth.Principal{}, auth.ErrUnknownToken
}
