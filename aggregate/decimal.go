package aggregate

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"strconv"
	"strings"
)

// Decimal is an exact base-10 number: coef / 10^scale.
//
// DynamoDB numbers carry up to 38 significant digits with exponents from
// -130 to +125, so floats would drift and int64 would overflow. Most real
// amounts fit an int64 coefficient, so that is the fast path; anything
// larger moves to math/big and stays exact.
type Decimal struct {
	small int64
	big   *big.Int // when non-nil it holds the coefficient and small is unused
	scale int32
}

// maxScale bounds the digits after the point. DynamoDB's smallest exponent
// is -130 with 38 digits, so 168 covers every number it can store.
const maxScale = 168

// ParseDecimal parses a DynamoDB number ("10.5", "-3", "1.25E+3").
func ParseDecimal(s string) (Decimal, error) {
	orig := s
	if s == "" {
		return Decimal{}, errors.New("empty number")
	}
	neg := false
	switch s[0] {
	case '-':
		neg, s = true, s[1:]
	case '+':
		s = s[1:]
	}
	exp := 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		e, err := strconv.Atoi(s[i+1:])
		if err != nil || e > 1000 || e < -1000 {
			return Decimal{}, fmt.Errorf("bad exponent in %q", orig)
		}
		exp, s = e, s[:i]
	}
	intPart, frac := s, ""
	if i := strings.IndexByte(s, '.'); i >= 0 {
		intPart, frac = s[:i], s[i+1:]
	}
	if intPart == "" && frac == "" {
		return Decimal{}, fmt.Errorf("no digits in %q", orig)
	}
	digits := intPart + frac
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return Decimal{}, fmt.Errorf("not a number: %q", orig)
		}
	}
	// Trailing fractional zeros change nothing but the scale, which is
	// bounded: "1.000…0" must not fail for its zeros.
	if trimmed := strings.TrimRight(frac, "0"); len(trimmed) < len(frac) {
		frac = trimmed
		digits = intPart + frac
	}
	scale := len(frac) - exp
	if scale < 0 {
		digits += strings.Repeat("0", -scale)
		scale = 0
	}
	digits = strings.TrimLeft(digits, "0")
	if scale > maxScale {
		return Decimal{}, fmt.Errorf("%q has more than %d digits after the point", orig, maxScale)
	}
	var d Decimal
	d.scale = int32(scale)
	if len(digits) <= 18 {
		var v int64
		for i := 0; i < len(digits); i++ {
			v = v*10 + int64(digits[i]-'0')
		}
		if neg {
			v = -v
		}
		d.small = v
		return d, nil
	}
	d.big = new(big.Int)
	d.big.SetString(digits, 10)
	if neg {
		d.big.Neg(d.big)
	}
	return d, nil
}

// DynamoDB's limits on numbers.
const (
	maxDigits = 38   // significant digits
	maxExp    = 125  // of the most significant digit: 9.99…E+125 is the largest
	minExp    = -130 // 1E-130 is the smallest magnitude
)

// ParseNumber parses an attribute value of type N, checking it against
// what DynamoDB can store: up to 38 significant digits, magnitudes from
// 1E-130 to 9.9999999999999999999999999999999999999E+125. DynamoDB stores
// nothing else, so a number beyond these limits did not come from an item
// as the table holds it: it is bad data, not a value to count.
func ParseNumber(s string) (Decimal, error) {
	d, err := ParseDecimal(s)
	if err != nil {
		return Decimal{}, err
	}
	if d.IsZero() {
		return d, nil
	}
	digits := d.coefDigits()
	sig := len(strings.TrimRight(digits, "0"))
	if sig > maxDigits {
		return Decimal{}, fmt.Errorf("%q has %d significant digits; DynamoDB allows %d", s, sig, maxDigits)
	}
	if exp := len(digits) - 1 - int(d.scale); exp > maxExp || exp < minExp {
		return Decimal{}, fmt.Errorf("%q is outside DynamoDB's range, 1E-130 to 9.9999999999999999999999999999999999999E+125", s)
	}
	return d, nil
}

// coefDigits returns the coefficient's absolute value in decimal.
func (d Decimal) coefDigits() string {
	if d.big != nil {
		return new(big.Int).Abs(d.big).String()
	}
	u := uint64(d.small)
	if d.small < 0 {
		u = -u
	}
	return strconv.FormatUint(u, 10)
}

// MustDecimal parses s and panics on error; for constants and tests.
func MustDecimal(s string) Decimal {
	d, err := ParseDecimal(s)
	if err != nil {
		panic(err)
	}
	return d
}

// IsZero reports whether d == 0.
func (d Decimal) IsZero() bool {
	if d.big != nil {
		return d.big.Sign() == 0
	}
	return d.small == 0
}

// Neg returns -d.
func (d Decimal) Neg() Decimal {
	if d.big != nil {
		return Decimal{big: new(big.Int).Neg(d.big), scale: d.scale}
	}
	if d.small == math.MinInt64 {
		return Decimal{big: new(big.Int).Neg(big.NewInt(d.small)), scale: d.scale}
	}
	return Decimal{small: -d.small, scale: d.scale}
}

// Add returns d + o.
func (d Decimal) Add(o Decimal) Decimal {
	if d.big == nil && o.big == nil {
		if r, ok := addSmall(d, o); ok {
			return r
		}
	}
	a, b := d.bigCoef(), o.bigCoef()
	scale := max(d.scale, o.scale)
	a.Mul(a, pow10Big(scale-d.scale))
	b.Mul(b, pow10Big(scale-o.scale))
	return Decimal{big: a.Add(a, b), scale: scale}
}

// Cmp compares d and o numerically: -1, 0 or +1.
func (d Decimal) Cmp(o Decimal) int {
	return d.Add(o.Neg()).sign()
}

func (d Decimal) sign() int {
	if d.big != nil {
		return d.big.Sign()
	}
	switch {
	case d.small < 0:
		return -1
	case d.small > 0:
		return 1
	}
	return 0
}

func addSmall(d, o Decimal) (Decimal, bool) {
	a, b := d.small, o.small
	scale := d.scale
	switch {
	case d.scale < o.scale:
		var ok bool
		if a, ok = mulPow10(a, o.scale-d.scale); !ok {
			return Decimal{}, false
		}
		scale = o.scale
	case o.scale < d.scale:
		var ok bool
		if b, ok = mulPow10(b, d.scale-o.scale); !ok {
			return Decimal{}, false
		}
	}
	s := a + b
	// Signed overflow happens only when both operands share a sign the sum lacks.
	if (a >= 0) == (b >= 0) && (s >= 0) != (a >= 0) {
		return Decimal{}, false
	}
	return Decimal{small: s, scale: scale}, true
}

func mulPow10(v int64, n int32) (int64, bool) {
	if n > 18 {
		return 0, v == 0
	}
	neg := v < 0
	u := uint64(v)
	if neg {
		u = uint64(-v)
	}
	hi, lo := bits.Mul64(u, pow10u[n])
	if hi != 0 || lo > math.MaxInt64 {
		return 0, false
	}
	if neg {
		return -int64(lo), true
	}
	return int64(lo), true
}

var pow10u = func() (p [19]uint64) {
	p[0] = 1
	for i := 1; i < len(p); i++ {
		p[i] = p[i-1] * 10
	}
	return p
}()

func pow10Big(n int32) *big.Int {
	if n <= 18 {
		return new(big.Int).SetUint64(pow10u[n])
	}
	return new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n)), nil)
}

func (d Decimal) bigCoef() *big.Int {
	if d.big != nil {
		return new(big.Int).Set(d.big)
	}
	return big.NewInt(d.small)
}

// String renders d canonically: plain digits, no exponent, no trailing
// fractional zeros, "0" for zero. Equal values always render equally, which
// is what lets readers compare counters as strings.
func (d Decimal) String() string {
	digits, neg := d.coefDigits(), d.sign() < 0
	if digits == "0" {
		return "0"
	}
	scale := int(d.scale)
	if scale > 0 {
		if len(digits) <= scale {
			digits = strings.Repeat("0", scale-len(digits)+1) + digits
		}
		point := len(digits) - scale
		intPart, frac := digits[:point], strings.TrimRight(digits[point:], "0")
		digits = intPart
		if frac != "" {
			digits += "." + frac
		}
	}
	if neg {
		return "-" + digits
	}
	return digits
}
