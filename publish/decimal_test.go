package publish

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/streamtally/streamtally/aggregate"
)

// exactView interleaves sum and count measures (amount, donations, fee), so
// the script must map each sum delta to the right hash.
func exactView(name string) *aggregate.View {
	return aggregate.NewView(aggregate.Spec{
		Name:    name,
		GroupBy: []string{"g"},
		Measures: []aggregate.MeasureSpec{
			{Name: "amount", Func: "sum", Attr: "amount"},
			{Name: "donations", Func: "count"},
			{Name: "fee", Func: "sum", Attr: "fee"},
		},
	})
}

// TestApplyDecimalCases runs the script's decimal addition over hand-made
// sequences whose results are known: carries and borrows across many digits,
// crossing zero, exact zeros, huge and tiny exponents, non-canonical inputs.
func TestApplyDecimalCases(t *testing.T) {
	nines := func(n int) string { return strings.Repeat("9", n) }
	zeros := func(n int) string { return strings.Repeat("0", n) }
	cases := []struct {
		name  string
		steps []string
		want  string
	}{
		{"single", []string{"10.5"}, "10.5"},
		{"zero sum for a new group", []string{"0"}, "0"},
		{"zero then value", []string{"0", "5"}, "5"},
		{"carry across 38 digits", []string{nines(38), "1"}, "1" + zeros(38)},
		{"carry across the point", []string{"999.999", "0.001"}, "1000"},
		{"fractional carry to integer", []string{"0." + nines(38), "1E-38"}, "1"},
		{"borrow across 39 digits", []string{"1" + zeros(39), "-1"}, nines(39)},
		{"borrow into the fraction", []string{"1", "-0." + zeros(38) + "1"}, "0." + nines(39)},
		{"subtraction crossing zero", []string{"10.25", "-20.5"}, "-10.25"},
		{"crossing back over zero", []string{"-10.25", "20.5"}, "10.25"},
		{"negative plus negative", []string{"-0.5", "-0.5"}, "-1"},
		{"small negative to positive", []string{"-0.001", "0.002"}, "0.001"},
		{"exactly zero", []string{"10.5", "-10.5"}, "0"},
		{"exactly zero over mixed scales", []string{"1.10", "-1.1000"}, "0"},
		{"zero from a negative", []string{"-3", "1", "1", "1"}, "0"},
		{"zero then negative", []string{"5", "-5", "-0.01"}, "-0.01"},
		{"leading zeros vanish", []string{"1000.001", "-999.999"}, "0.002"},
		{"trailing zeros vanish", []string{"123.4500", "0.5500"}, "124"},
		{"non-canonical inputs", []string{"0007.50", "-0002.5", "+1.0"}, "6"},
		{"38 digits cancel to a tenth", []string{"12345678901234567890123456789012345678", "-12345678901234567890123456789012345677.9"}, "0.1"},
		{"ten tenths", []string{"0.1", "0.1", "0.1", "0.1", "0.1", "0.1", "0.1", "0.1", "0.1", "0.1"}, "1"},
		{"1E+100 plus 1E-130", []string{"1E+100", "1E-130"}, "1" + zeros(100) + "." + zeros(129) + "1"},
		{"1E+100 minus 1E-130", []string{"1E+100", "-1E-130"}, nines(100) + "." + nines(130)},
		{"1E+100 cancels", []string{"1E+100", "-1E+100"}, "0"},
		{"1E-130 cancels", []string{"-1E-130", "1E-130"}, "0"},
		{"38 digit mantissa at both ends", []string{nines(38) + "E+87", nines(38) + "E-130"}, nines(38) + zeros(87) + "." + zeros(92) + nines(38)},
	}
	v := exactView("cases")
	f := newFixture(t, v)
	fence := ""
	for i, c := range cases {
		group := fmt.Sprintf("case%02d", i)
		for j, s := range c.steps {
			var count int64
			if j == 0 {
				count = 1 // the group has one item throughout
			}
			through := fmt.Sprint(i*100 + j + 1)
			// fee receives the negation of every step.
			f.apply(mkDelta(v, "shard", fence, through, map[string]gd{
				group: {count: count, sums: []string{s, negate(s)}},
			}))
			fence = through
		}
	}
	amount, fee := f.measure(v.Name, "amount"), f.measure(v.Name, "fee")
	donations := f.measure(v.Name, "donations")
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			group := fmt.Sprintf("case%02d", i)
			got, ok := amount[group]
			if !ok {
				t.Fatalf("amount[%s] missing, want %q", group, c.want)
			}
			if got != c.want {
				t.Errorf("amount[%s] = %q, want %q", group, got, c.want)
			}
			checkCanonical(t, "amount["+group+"]", got)
			wantFee := "0"
			if c.want != "0" {
				wantFee = negate(c.want)
			}
			if got := fee[group]; got != wantFee {
				t.Errorf("fee[%s] = %q, want %q", group, got, wantFee)
			}
			if got := donations[group]; got != "1" {
				t.Errorf("donations[%s] = %q, want 1", group, got)
			}
		})
	}
}

// randomDecimal returns a DynamoDB number with 1..38 significant digits in
// one of its textual forms, and its exact value.
func randomDecimal(r *rand.Rand) (string, *big.Rat) {
	n := 1 + r.IntN(38)
	var digits strings.Builder
	for i := 0; i < n; i++ {
		digits.WriteByte(byte('0' + r.IntN(10)))
	}
	m := digits.String()
	// Mostly everyday exponents, sometimes DynamoDB's extremes.
	var exp int
	switch r.IntN(10) {
	case 0:
		exp = 60 + r.IntN(41) // up to 1E+100 and beyond with 38 digits
	case 1:
		exp = -130 + r.IntN(40) // down to 1E-130
	default:
		exp = r.IntN(21) - 10
	}
	neg := r.IntN(2) == 0
	val, _ := new(big.Int).SetString(m, 10)
	rat := new(big.Rat).SetInt(val)
	scale := new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(abs(exp))), nil))
	if exp >= 0 {
		rat.Mul(rat, scale)
	} else {
		rat.Quo(rat, scale)
	}
	sign := ""
	if neg {
		sign = "-"
		rat.Neg(rat)
	} else if r.IntN(10) == 0 {
		sign = "+"
	}
	var s string
	switch {
	case r.IntN(2) == 0:
		// Exponent form: 123E-5, 1.23E+7, 123e2.
		mant := m
		e := exp
		if len(m) > 1 && r.IntN(2) == 0 {
			mant = m[:1] + "." + m[1:]
			e += len(m) - 1
		}
		sep := "E"
		if r.IntN(4) == 0 {
			sep = "e"
		}
		es := fmt.Sprint(e)
		if e >= 0 && r.IntN(2) == 0 {
			es = "+" + es
		}
		s = sign + mant + sep + es
	case exp >= 0:
		s = sign + m + strings.Repeat("0", exp)
	default:
		// Plain form with a point, padded so the point falls inside.
		p := m
		if len(p) <= -exp {
			p = strings.Repeat("0", -exp-len(p)+1) + p
		}
		s = sign + p[:len(p)+exp] + "." + p[len(p)+exp:]
	}
	return s, rat
}

// negate flips the sign of a decimal's text.
func negate(s string) string {
	if strings.HasPrefix(s, "-") {
		return s[1:]
	}
	return "-" + strings.TrimPrefix(s, "+")
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// TestApplyRandomDecimalsAreExact applies thousands of random deltas through
// the real script and compares every hash value, as a string, with the
// math/big result rendered canonically. Some steps are chosen to land on
// exactly zero or just across it.
func TestApplyRandomDecimalsAreExact(t *testing.T) {
	r := rand.New(rand.NewPCG(2024, 7))
	v := exactView("random")
	f := newFixture(t, v)
	groups := []string{"a", "b", "c", "d", "e"}
	type exp struct {
		count       int64
		amount, fee *big.Rat
	}
	want := map[string]*exp{}
	// Check the random numbers themselves against the Go parser first: a
	// generator bug must not pass for a script bug.
	for i := 0; i < 200; i++ {
		s, rat := randomDecimal(r)
		d, err := aggregate.ParseDecimal(s)
		if err != nil {
			t.Fatalf("ParseDecimal(%q): %v", s, err)
		}
		if mustRat(d.String()).Cmp(rat) != 0 {
			t.Fatalf("generator: %q parses to %s, generator meant %s", s, d, ratString(rat))
		}
	}

	const applies = 1500
	fence, values := "", 0
	for i := 0; i < applies; i++ {
		groupsOf := map[string]gd{}
		for _, gi := range r.Perm(len(groups))[:1+r.IntN(3)] {
			g := groups[gi]
			e := want[g]
			var count int64
			if e == nil {
				e = &exp{amount: new(big.Rat), fee: new(big.Rat)}
				want[g] = e
				count = 1 + int64(r.IntN(3))
			} else {
				// Keep at least one item so the group stays.
				count = int64(r.IntN(5)) - 2
				if e.count+count < 1 {
					count = 0
				}
			}
			e.count += count
			var sums [2]string
			for k, acc := range []*big.Rat{e.amount, e.fee} {
				var s string
				var rat *big.Rat
				switch r.IntN(20) {
				case 0: // land on exactly zero
					rat = new(big.Rat).Neg(acc)
					s = ratString(rat)
				case 1: // cross zero: land on -sign(acc)*|small|
					_, small := randomDecimal(r)
					small.Abs(small)
					if acc.Sign() > 0 {
						small.Neg(small)
					}
					rat = new(big.Rat).Sub(small, acc)
					s = ratString(rat)
				default:
					s, rat = randomDecimal(r)
				}
				acc.Add(acc, rat)
				sums[k] = s
				values++
			}
			groupsOf[g] = gd{count: count, sums: sums[:]}
		}
		through := fmt.Sprint(1000 + i)
		f.apply(mkDelta(v, "shard-0", fence, through, groupsOf))
		fence = through
	}
	t.Logf("%d applies, %d decimal additions", applies, values)

	amount, fee := f.measure(v.Name, "amount"), f.measure(v.Name, "fee")
	donations, items := f.measure(v.Name, "donations"), f.hash(f.keys(v.Name).Items())
	for _, g := range groups {
		e := want[g]
		for _, c := range []struct {
			name string
			got  map[string]string
			want string
		}{
			{"amount", amount, ratString(e.amount)},
			{"fee", fee, ratString(e.fee)},
			{"donations", donations, fmt.Sprint(e.count)},
			{"_items", items, fmt.Sprint(e.count)},
		} {
			got, ok := c.got[g]
			if !ok {
				t.Errorf("%s[%s] missing, want %q", c.name, g, c.want)
				continue
			}
			if got != c.want {
				t.Errorf("%s[%s] = %q\nwant %q", c.name, g, got, c.want)
			}
			checkCanonical(t, c.name+"["+g+"]", got)
		}
	}
	if got := f.version(v.Name); got != fmt.Sprint(applies) {
		t.Errorf("version = %s, want %d", got, applies)
	}
}
