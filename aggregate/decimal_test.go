package aggregate

import (
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestParseDecimalCanonicalString(t *testing.T) {
	cases := []struct{ in, want string }{
		{"0", "0"},
		{"-0", "0"},
		{"10", "10"},
		{"10.50", "10.5"},
		{"-3.25", "-3.25"},
		{"1.25E+3", "1250"},
		{"125e-2", "1.25"},
		{".5", "0.5"},
		{"5.", "5"},
		{"0.000", "0"},
		{"99999999999999999999999999999999999999", "99999999999999999999999999999999999999"},
		{"1E+125", "1" + strings.Repeat("0", 125)},
		{"1E-130", "0." + strings.Repeat("0", 129) + "1"},
		{"-9223372036854775808", "-9223372036854775808"},
	}
	for _, c := range cases {
		d, err := ParseDecimal(c.in)
		if err != nil {
			t.Errorf("ParseDecimal(%q): %v", c.in, err)
			continue
		}
		if got := d.String(); got != c.want {
			t.Errorf("ParseDecimal(%q).String() = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestParseDecimalRejectsNonNumbers(t *testing.T) {
	for _, in := range []string{"", "-", "abc", "1.2.3", "1e", "1e99999", "NaN", "1,5", "0x10"} {
		if _, err := ParseDecimal(in); err == nil {
			t.Errorf("ParseDecimal(%q) succeeded, want error", in)
		}
	}
}

func TestParseNumberKeepsToDynamoDBsLimits(t *testing.T) {
	nines := strings.Repeat("9", 38)
	ok := []string{
		"0", "-0", "0.000", "10.50", nines, "-" + nines,
		"9.9999999999999999999999999999999999999E+125", "-9.9999999999999999999999999999999999999E+125",
		"1E-130", "-1E-130", "1.2345678901234567890123456789012345678E-130",
		"1" + strings.Repeat("0", 125),  // one significant digit, however many zeros
		"1." + strings.Repeat("0", 200), // trailing zeros are not precision
		"0.00000000000000000000000000000000000000000001234",
	}
	for _, in := range ok {
		if _, err := ParseNumber(in); err != nil {
			t.Errorf("ParseNumber(%q): %v", in, err)
		}
	}
	bad := []string{
		"", "abc", "1.2.3", "1e", "NaN", "Infinity",
		nines + "9", // 39 significant digits
		"1.00000000000000000000000000000000000001",
		"1E+126", "10E+125", "-1E+126",
		"9E-131", "0.1E-130", "1E-1000", "1E+1000",
	}
	for _, in := range bad {
		if d, err := ParseNumber(in); err == nil {
			t.Errorf("ParseNumber(%q) = %s, want an error", in, d)
		}
	}
}

func TestDecimalAddHasNoDriftOverAMillionSteps(t *testing.T) {
	up, down := MustDecimal("0.10"), MustDecimal("-0.10")
	sum := MustDecimal("0")
	for i := 0; i < 1_000_000; i++ {
		sum = sum.Add(up)
		if i%3 == 0 {
			sum = sum.Add(down)
		}
	}
	// 1e6 additions of 0.10 minus 333 334 subtractions of 0.10.
	if got, want := sum.String(), "66666.6"; got != want {
		t.Fatalf("sum = %s, want %s", got, want)
	}
}

// TestDecimalAddMatchesBigRat crosses the int64 fast path and the big path
// at random and checks both against math/big.Rat.
func TestDecimalAddMatchesBigRat(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	randNum := func() string {
		var b strings.Builder
		if r.IntN(2) == 0 {
			b.WriteByte('-')
		}
		n := 1 + r.IntN(38)
		for i := 0; i < n; i++ {
			b.WriteByte(byte('0' + r.IntN(10)))
		}
		if r.IntN(3) > 0 {
			b.WriteString("E")
			b.WriteString(big.NewInt(int64(r.IntN(60) - 40)).String())
		}
		return b.String()
	}
	for i := 0; i < 20000; i++ {
		as, bs := randNum(), randNum()
		a, b := MustDecimal(as), MustDecimal(bs)
		ra, _ := new(big.Rat).SetString(as)
		rb, _ := new(big.Rat).SetString(bs)
		want := new(big.Rat).Add(ra, rb)
		got, ok := new(big.Rat).SetString(a.Add(b).String())
		if !ok || got.Cmp(want) != 0 {
			t.Fatalf("%s + %s = %s, want %s", as, bs, a.Add(b), want.FloatString(60))
		}
		if c := a.Add(b).Cmp(b.Add(a)); c != 0 {
			t.Fatalf("addition not commutative for %s, %s", as, bs)
		}
	}
}
