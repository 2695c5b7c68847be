package accounts

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTier(t *testing.T) {
	cases := []struct {
		w, h int
		want string
	}{
		{0, 0, "SD1"},
		{600_000, 1, "SD1"},
		{600_001, 1, "HD1"},
		{1_400_000, 1, "HD1"},
		{1_400_001, 1, "HD2"},
		{2_400_000, 1, "HD2"},
		{2_400_001, 1, "HD3"},
		{3_200_000, 1, "HD3"},
		{3_200_001, 1, "HD4"},
		{4_100_000, 1, "HD4"},
		{4_100_001, 1, "HD5"},
		{5_100_000, 1, "HD5"},
		{5_100_001, 1, "HD10"},
		// the examples of DESIGN.md
		{640, 480, "SD1"},
		{1280, 720, "HD1"},
		{1920, 1080, "HD2"},
		{2560, 1440, "HD4"},
		{3840, 2160, "HD10"},
		{100_000, 100_000, "HD10"}, // no int overflow
	}
	for _, c := range cases {
		require.Equal(t, c.want, Tier(c.w, c.h), "%dx%d", c.w, c.h)
	}
}

func TestSKU(t *testing.T) {
	require.Equal(t, "HD1-D30", SKU(StreamSettings{Width: 1280, Height: 720, RetentionDays: 30}))
	require.Equal(t, "HD10-D3650", SKU(StreamSettings{Width: 3840, Height: 2160, RetentionDays: 3650}))
}

func TestTierAbove(t *testing.T) {
	require.True(t, TierAbove(1920, 1080, 1280, 720))   // HD2 over HD1
	require.False(t, TierAbove(1280, 720, 1280, 720))   // same
	require.False(t, TierAbove(1280, 720, 1920, 1080))  // below
	require.False(t, TierAbove(1280, 800, 1280, 720))   // still HD1
	require.True(t, TierAbove(3840, 2160, 2560, 1440))  // HD10 over HD4
	require.False(t, TierAbove(7680, 4320, 3840, 2160)) // both HD10
}
