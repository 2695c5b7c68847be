package billing_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/billing"
)

func TestValidSKUPrefix(t *testing.T) {
	for _, p := range []string{"", "Mx-", "ABC-123-xyz", "0123456789abcdef"} {
		require.NoError(t, billing.ValidSKUPrefix(p), p)
	}
	for _, p := range []string{"Mx_", "M x", "0123456789abcdefg", "Mx-\n", "é"} {
		require.Error(t, billing.ValidSKUPrefix(p), p)
	}
}
