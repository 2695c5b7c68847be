package meter

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
	px := int64(width) * int64(height)
	for _, t := range tierTable {
		if px <= t.max {
			return t.name
		}
	}
	return "HD10"
}

// SKU returns the subscription code `<TIER>-D<days>` of settings, e.g.
// HD1-D30. A configured prefix (the seed's "Mx-") is the caller's business.
func SKU(s StreamSettings) string {
	return Tier(s.Width, s.Height) + "-D" + strconv.Itoa(s.RetentionDays)
}
