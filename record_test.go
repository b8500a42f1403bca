package streamtally

import "testing"

func TestSeqLessComparesAsNumbers(t *testing.T) {
	cases := []struct {
		a, b string
		less bool
	}{
		{"1", "2", true},
		{"2", "1", false},
		{"9", "10", true},
		{"000000000000000000009", "10", true},
		{"100000000000000000001", "99999999999999999999", false},
		{"5", "5", false},
		{"0005", "5", false},
	}
	for _, c := range cases {
		if got := SeqLess(c.a, c.b); got != c.less {
			t.Errorf("SeqLess(%q, %q) = %v, want %v", c.a, c.b, got, c.less)
		}
	}
}
