package aggregate

import (
	"sort"
	"strings"

	"github.com/streamtally/streamtally"
)

// KeyString renders an item's key attributes for log lines, e.g.
// "email=a@test.com,donatedAt=2019-08-07T07:26:56".
func KeyString(keys streamtally.Image) string {
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for i, k := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		switch v := keys[k].(type) {
		case *streamtally.S:
			b.WriteString(v.Value)
		case *streamtally.N:
			b.WriteString(v.Value)
		default:
			b.WriteString("<" + typeName(v) + ">")
		}
	}
	return b.String()
}
