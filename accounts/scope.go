package accounts

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/internal/httpx"
)

// ErrForbidden is a principal acting outside its scope or role (403).
var ErrForbidden = errors.New("forbidden")

// Need is what an action needs of the principal in an account.
type Need int

// Needs.
const (
	Read  Need = iota // list, read, watch
	Admin             // manage users and settings
)

// RoleAdmin is the role of a user who manages its accounts (package access
// holds users; the scope rule lives with the account tree it walks).
const RoleAdmin = "admin"

// Allowed reports whether p may act on account with need: the operator
// everywhere; a user in its own account and every account below it in the
// tree (tree.go); Admin needs the admin role. Bridges and
// billing tokens manage no account. An unknown account is outside every
// user's scope.
func (reg *Registry) Allowed(p auth.Principal, account string, need Need) error {
	switch p.Kind {
	case auth.Operator:
		return nil
	case auth.User:
	default:
		return fmt.Errorf("%w: %s cannot manage accounts", ErrForbidden, p.Actor())
	}
	if need == Admin && p.Role != RoleAdmin {
		return fmt.Errorf("%w: an admin of the account is required", ErrForbidden)
	}
	reg.st.m.RLock()
	defer reg.st.m.RUnlock()
	if reg.st.reaches(p.Account, account) {
		return nil
	}
	return fmt.Errorf("%w: account %s is outside %s's scope", ErrForbidden, account, p.Actor())
}

// reaches: own account, or one below it in the tree (the caller holds the
// lock).
func (st *State) reaches(own, account string) bool {
	a := st.Accounts[account]
	for depth := 0; a != nil && depth < maxDepth; depth++ {
		if a.ID == own {
			return true
		}
		a = st.Accounts[a.Parent]
	}
	return false
}

// WriteForbidden answers 403 for an ErrForbidden and reports whether err
// was one.
func WriteForbidden(w http.ResponseWriter, err error) bool {
	if !errors.Is(err, ErrForbidden) {
		return false
	}
	httpx.WriteError(w, http.StatusForbidden, "forbidden", err.Error())
	return true
}
