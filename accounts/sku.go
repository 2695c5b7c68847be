package accounts

import "strconv"

// tierTable is DESIGN.md section 1's resolution tiers: a tier covers pixel
// counts up to and including max.
var tierTable = [...]struct {
	max  int64
	name string
}{
	{600_000, "SD1"},
	{1_400_000, "HD1"},
	{2_400_000, "HD2"},
	{3_200_000, "HD3"},
	{4_100_000, "HD4"},
	{5_100_000, "HD5"},
}

// Tier returns the resolution tier of a width × height picture.
func Tier(width, height int) string {
	if i := tierRank(width, height); i < len(tierTable) {
		return tierTable[i].name
	}
	return "HD10"
}

// TierAbove reports whether a picture of w × h is in a higher tier than
// one of cw × ch: the media shows more than is billed.
func TierAbove(w, h, cw, ch int) bool {
	return tierRank(w, h) > tierRank(cw, ch)
}

func tierRank(width, height int) int {
	px := int64(width) * int64(height)
	for i, t := range tierTable {
		if px <= t.max {
			return i
		}
	}
	return len(tierTable)
}

// SKU returns the subscription code `<TIER>-D<days>` of settings, e.g.
// HD1-D30. A configured prefix (the seed's "Mx-") is the caller's business.
func SKU(s StreamSettings) string {
	return Tier(s.Width, s.Height) + "-D" + strconv.Itoa(s.RetentionDays)
}
