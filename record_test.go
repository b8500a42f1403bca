package streamtally

import "testing"

func TestSeqComparesAsNumbers(t *testing.T) {
	cases := []struct {
		a, b  Seq
		less  bool
		after bool
	}{
		{"1", "2", true, false},
		{"2", "1", false, true},
		{"9", "10", true, false},
		{"000000000000000000009", "10", true, false},
		{"100000000000000000001", "99999999999999999999", false, true},
		{"5", "5", false, false},
		{"0005", "5", false, false},
		{"5", "", false, true},
		{"", "5", true, false},
		{"", "", false, false},
	}
	for _, c := range cases {
		if got := c.a.Less(c.b); got != c.less {
			t.Errorf("Seq(%q).Less(%q) = %v, want %v", c.a, c.b, got, c.less)
		}
		if got := c.a.After(c.b); got != c.after {
			t.Errorf("Seq(%q).After(%q) = %v, want %v", c.a, c.b, got, c.after)
		}
	}
}
