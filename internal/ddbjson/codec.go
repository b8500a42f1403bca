package ddbjson

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/streamtally/streamtally"
)

// This file reads and writes DynamoDB JSON, the wire format of DynamoDB
// Streams' GetRecords: images are objects of attribute values such as
// {"S":"Web"}, {"N":"10.5"} or {"M":{...}}, and a record is
//
//	{"eventName":"MODIFY","dynamodb":{"Keys":{...},"OldImage":{...},
//	 "NewImage":{...},"SequenceNumber":"...","ApproximateCreationDateTime":1.7E9}}
//
// The decoder is written for the hot path: it reads the input once, takes
// every string without escapes as a substring of one copy of the input, and
// allocates attribute values in blocks. It never panics on malformed input.

// maxDepth bounds how deeply lists and maps nest. DynamoDB allows 32
// levels; the bound keeps hostile input from exhausting the stack.
const maxDepth = 64

// DecodeError says what is wrong with a DynamoDB JSON document and where.
type DecodeError struct {
	Offset int    // byte offset into the input
	Path   string // e.g. "Records[3].dynamodb.NewImage.amount.N"
	Msg    string
}

func (e *DecodeError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("dynamodb json at offset %d: %s", e.Offset, e.Msg)
	}
	return fmt.Sprintf("dynamodb json at offset %d: %s: %s", e.Offset, e.Path, e.Msg)
}

// within prefixes the path of a decode error with seg, so that paths are
// built only on the way out of a failure.
func within(err error, seg string) error {
	if err == nil {
		return nil
	}
	var de *DecodeError
	if errors.As(err, &de) {
		switch {
		case de.Path == "":
			de.Path = seg
		case de.Path[0] == '[':
			de.Path = seg + de.Path
		default:
			de.Path = seg + "." + de.Path
		}
	}
	return err
}

// atIndex is within for the i-th element of an array; the segment is only
// built on failure.
func atIndex(err error, i int) error {
	if err == nil {
		return nil
	}
	return within(err, "["+strconv.Itoa(i)+"]")
}

// DecodeImage decodes one image: an object of attribute values, or null.
func DecodeImage(data []byte) (streamtally.Image, error) {
	d := newDecoder(data)
	d.ws()
	var img streamtally.Image
	var err error
	if d.literalNext("null") {
		err = d.literal("null")
	} else {
		img, err = d.image()
	}
	if err == nil {
		err = d.end()
	}
	if err != nil {
		return nil, err
	}
	return img, nil
}

// DecodeRecord decodes one stream record (an element of GetRecords'
// "Records") read from shard. Anything malformed, including an unknown
// eventName, is an error.
func DecodeRecord(data []byte, shard string) (streamtally.Record, error) {
	d := newDecoder(data)
	var r streamtally.Record
	err := d.record(&r, shard, false)
	if err == nil {
		err = d.end()
	}
	if err != nil {
		return streamtally.Record{}, err
	}
	return r, nil
}

// DecodeRecords decodes a GetRecords response body from shard. next is the
// NextShardIterator, empty when the shard is closed and read to its end.
//
// A record whose images cannot be decoded, or whose eventName is unknown,
// comes back with Malformed set rather than failing the batch. A body that
// is not JSON, or a record whose own fields (sequence number, creation
// time) cannot be read, is an error: without them a record can be neither
// fenced nor checkpointed.
//
// Strings in the records share one copy of body: keeping any of them keeps
// that copy alive.
func DecodeRecords(body []byte, shard string) (recs []streamtally.Record, next string, err error) {
	d := newDecoder(body)
	d.ws()
	if d.literalNext("null") {
		return nil, "", d.fail("want an object, got null")
	}
	var seen uint8
	err = d.object(func(key string) error {
		switch key {
		case "Records":
			if !d.once(&seen, 1) {
				return d.fail("Records appears twice")
			}
			if d.literalNext("null") {
				return d.literal("null")
			}
			return within(d.array(func(i int) error {
				recs = append(recs, streamtally.Record{})
				return atIndex(d.record(&recs[len(recs)-1], shard, true), i)
			}), "Records")
		case "NextShardIterator":
			if !d.once(&seen, 2) {
				return d.fail("NextShardIterator appears twice")
			}
			if d.literalNext("null") {
				return d.literal("null")
			}
			var err error
			next, err = d.str()
			return within(err, "NextShardIterator")
		}
		return d.skip()
	})
	if err == nil {
		err = d.end()
	}
	if err != nil {
		return nil, "", err
	}
	return recs, next, nil
}

type decoder struct {
	b     []byte // the input
	s     string // a copy of it; decoded strings without escapes are substrings of s
	pos   int
	depth int

	scratch []byte              // for strings with escapes
	avs     []streamtally.Value // stack of list elements being read
	strs    []string            // stack of set elements being read
	blobs   [][]byte            // stack of binary set elements being read
	bytes   []byte              // block that binary values are cut from

	sv    slab[streamtally.S]
	nv    slab[streamtally.N]
	bv    slab[streamtally.B]
	boolv slab[streamtally.Bool]
	nullv slab[streamtally.Null]
	ssv   slab[streamtally.SS]
	nsv   slab[streamtally.NS]
	bsv   slab[streamtally.BS]
	lv    slab[streamtally.L]
	mv    slab[streamtally.M]
}

func newDecoder(b []byte) *decoder { return &decoder{b: b, s: string(b)} }

// slab hands out pointers into blocks of T, so that a batch of attribute
// values costs a few allocations rather than one each.
type slab[T any] struct {
	free []T
	size int
}

func (s *slab[T]) new() *T {
	if len(s.free) == 0 {
		s.size = min(max(2*s.size, 8), 512)
		s.free = make([]T, s.size)
	}
	p := &s.free[0]
	s.free = s.free[1:]
	return p
}

func (d *decoder) fail(format string, args ...any) error {
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	return &DecodeError{Offset: d.pos, Msg: msg}
}

// once records that the field with bit has been seen and reports whether
// it is the first time.
func (d *decoder) once(seen *uint8, bit uint8) bool {
	if *seen&bit != 0 {
		return false
	}
	*seen |= bit
	return true
}

func (d *decoder) ws() {
	for d.pos < len(d.s) {
		switch d.s[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *decoder) end() error {
	d.ws()
	if d.pos != len(d.s) {
		return d.fail("unexpected data after the document")
	}
	return nil
}

// next skips whitespace and returns the next byte without consuming it,
// or 0 at the end of the input.
func (d *decoder) next() byte {
	d.ws()
	if d.pos < len(d.s) {
		return d.s[d.pos]
	}
	return 0
}

func (d *decoder) literalNext(word string) bool {
	return d.next() == word[0]
}

func (d *decoder) literal(word string) error {
	d.ws()
	if !strings.HasPrefix(d.s[d.pos:], word) {
		return d.fail("invalid literal, want %s", word)
	}
	d.pos += len(word)
	return nil
}

func (d *decoder) boolean() (bool, error) {
	switch d.next() {
	case 't':
		return true, d.literal("true")
	case 'f':
		return false, d.literal("false")
	}
	return false, d.fail("want true or false, got %s", d.kind())
}

// kind names the JSON type of the value that starts at pos, for errors.
func (d *decoder) kind() string {
	switch c := d.next(); {
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case c == '-' || c >= '0' && c <= '9':
		return "a number"
	case c == 0:
		return "the end of the input"
	}
	return fmt.Sprintf("%q", d.s[d.pos])
}

// object reads an object, calling member for each key with pos at the
// value, which member must consume.
func (d *decoder) object(member func(key string) error) error {
	if d.next() != '{' {
		return d.fail("want an object, got %s", d.kind())
	}
	d.pos++
	if d.next() == '}' {
		d.pos++
		return nil
	}
	for {
		if d.next() != '"' {
			return d.fail("want a member name, got %s", d.kind())
		}
		key, err := d.str()
		if err != nil {
			return err
		}
		if d.next() != ':' {
			return d.fail("want ':' after a member name")
		}
		d.pos++
		if err := member(key); err != nil {
			return err
		}
		switch d.next() {
		case ',':
			d.pos++
		case '}':
			d.pos++
			return nil
		default:
			return d.fail("want ',' or '}' in an object")
		}
	}
}

// array reads an array, calling elem for each element with pos at it.
func (d *decoder) array(elem func(i int) error) error {
	if d.next() != '[' {
		return d.fail("want an array, got %s", d.kind())
	}
	d.pos++
	if d.next() == ']' {
		d.pos++
		return nil
	}
	for i := 0; ; i++ {
		if err := elem(i); err != nil {
			return err
		}
		switch d.next() {
		case ',':
			d.pos++
		case ']':
			d.pos++
			return nil
		default:
			return d.fail("want ',' or ']' in an array")
		}
	}
}

// strBytes reads a string and returns its bytes: a view of the input when
// it has no escapes, else the decoded text in scratch, valid until the
// next call.
func (d *decoder) strBytes() (b []byte, direct bool, start int, err error) {
	if d.next() != '"' {
		return nil, false, 0, d.fail("want a string, got %s", d.kind())
	}
	d.pos++
	start = d.pos
	for d.pos < len(d.s) {
		c := d.s[d.pos]
		switch {
		case c == '"':
			d.pos++
			return d.b[start : d.pos-1], true, start, nil
		case c == '\\':
			return d.escaped(start)
		case c < 0x20:
			return nil, false, 0, d.fail("control character in a string")
		case c >= utf8.RuneSelf:
			r, n := utf8.DecodeRuneInString(d.s[d.pos:])
			if r == utf8.RuneError && n == 1 {
				return nil, false, 0, d.fail("invalid UTF-8 in a string")
			}
			d.pos += n
		default:
			d.pos++
		}
	}
	return nil, false, 0, d.fail("unterminated string")
}

// escaped finishes a string that has an escape at pos, decoding it into
// scratch.
func (d *decoder) escaped(start int) ([]byte, bool, int, error) {
	buf := append(d.scratch[:0], d.s[start:d.pos]...)
	for d.pos < len(d.s) {
		c := d.s[d.pos]
		switch {
		case c == '"':
			d.pos++
			d.scratch = buf
			return buf, false, start, nil
		case c == '\\':
			if d.pos+1 >= len(d.s) {
				return nil, false, 0, d.fail("unterminated string")
			}
			e := d.s[d.pos+1]
			d.pos += 2
			switch e {
			case '"', '\\', '/':
				buf = append(buf, e)
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				r, ok := d.hex4()
				if !ok {
					return nil, false, 0, d.fail(`invalid \u escape`)
				}
				if utf16.IsSurrogate(r) {
					// A lone surrogate becomes U+FFFD, as encoding/json does.
					r2 := utf8.RuneError
					if strings.HasPrefix(d.s[d.pos:], `\u`) {
						save := d.pos
						d.pos += 2
						if lo, ok := d.hex4(); ok {
							if dec := utf16.DecodeRune(r, lo); dec != utf8.RuneError {
								r2 = dec
							} else {
								d.pos = save
							}
						} else {
							d.pos = save
						}
					}
					r = r2
				}
				buf = utf8.AppendRune(buf, r)
			default:
				d.pos -= 2
				return nil, false, 0, d.fail("invalid escape in a string")
			}
		case c < 0x20:
			return nil, false, 0, d.fail("control character in a string")
		case c >= utf8.RuneSelf:
			r, n := utf8.DecodeRuneInString(d.s[d.pos:])
			if r == utf8.RuneError && n == 1 {
				return nil, false, 0, d.fail("invalid UTF-8 in a string")
			}
			buf = append(buf, d.s[d.pos:d.pos+n]...)
			d.pos += n
		default:
			buf = append(buf, c)
			d.pos++
		}
	}
	return nil, false, 0, d.fail("unterminated string")
}

func (d *decoder) hex4() (rune, bool) {
	if d.pos+4 > len(d.s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(d.s[d.pos : d.pos+4]) {
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	d.pos += 4
	return r, true
}

// str reads a string.
func (d *decoder) str() (string, error) {
	b, direct, start, err := d.strBytes()
	if err != nil {
		return "", err
	}
	if direct {
		return d.s[start : start+len(b)], nil
	}
	return string(b), nil
}

// number reads a JSON number and returns its text.
func (d *decoder) number() (string, error) {
	d.ws()
	start := d.pos
	if d.pos < len(d.s) && d.s[d.pos] == '-' {
		d.pos++
	}
	switch {
	case d.pos < len(d.s) && d.s[d.pos] == '0':
		d.pos++
	case d.digits() == 0:
		d.pos = start
		return "", d.fail("want a number, got %s", d.kind())
	}
	if d.pos < len(d.s) && d.s[d.pos] == '.' {
		d.pos++
		if d.digits() == 0 {
			return "", d.fail("want digits after the decimal point")
		}
	}
	if d.pos < len(d.s) && (d.s[d.pos] == 'e' || d.s[d.pos] == 'E') {
		d.pos++
		if d.pos < len(d.s) && (d.s[d.pos] == '+' || d.s[d.pos] == '-') {
			d.pos++
		}
		if d.digits() == 0 {
			return "", d.fail("want digits in the exponent")
		}
	}
	return d.s[start:d.pos], nil
}

func (d *decoder) digits() int {
	n := 0
	for d.pos < len(d.s) && d.s[d.pos] >= '0' && d.s[d.pos] <= '9' {
		d.pos++
		n++
	}
	return n
}

// skip reads any value and discards it, checking its syntax.
func (d *decoder) skip() error {
	switch c := d.next(); {
	case c == '{':
		if d.depth >= maxDepth {
			return d.fail("nested more than %d levels", maxDepth)
		}
		d.depth++
		defer func() { d.depth-- }()
		return d.object(func(string) error { return d.skip() })
	case c == '[':
		if d.depth >= maxDepth {
			return d.fail("nested more than %d levels", maxDepth)
		}
		d.depth++
		defer func() { d.depth-- }()
		return d.array(func(int) error { return d.skip() })
	case c == '"':
		_, _, _, err := d.strBytes()
		return err
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	case c == 'n':
		return d.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		_, err := d.number()
		return err
	}
	return d.fail("want a JSON value, got %s", d.kind())
}

// record reads one stream record into r. With isolate, problems in the
// images or the event name mark the record Malformed instead of failing.
func (d *decoder) record(r *streamtally.Record, shard string, isolate bool) error {
	d.ws()
	start := d.pos
	r.Shard = shard
	var seen uint8
	var bad error
	eventName := ""
	err := d.object(func(key string) error {
		switch key {
		case "eventName":
			if !d.once(&seen, 1) {
				return d.fail("eventName appears twice")
			}
			var err error
			eventName, err = d.str()
			return within(err, "eventName")
		case "dynamodb":
			if !d.once(&seen, 2) {
				return d.fail("dynamodb appears twice")
			}
			return within(d.streamRecord(r, isolate, &bad), "dynamodb")
		}
		return d.skip()
	})
	if err != nil {
		return err
	}
	if seen&2 == 0 {
		return d.fail("record has no dynamodb member")
	}
	switch eventName {
	case "INSERT":
		r.Event = streamtally.Insert
	case "MODIFY":
		r.Event = streamtally.Modify
	case "REMOVE":
		r.Event = streamtally.Remove
	default:
		e := &DecodeError{Offset: start, Path: "eventName", Msg: fmt.Sprintf("unknown event %q", eventName)}
		if !isolate {
			return e
		}
		if bad == nil {
			bad = e
		}
	}
	if bad != nil {
		r.Malformed = &streamtally.Malformed{Err: bad, Raw: []byte(d.s[start:d.pos])}
	}
	return nil
}

// streamRecord reads the "dynamodb" member of a record. An image that
// cannot be decoded fails the record, or with isolate is left nil and
// reported in *bad while reading goes on.
func (d *decoder) streamRecord(r *streamtally.Record, isolate bool, bad *error) error {
	var seen uint8
	readImage := func(bit uint8, name string, dst *streamtally.Image) error {
		if !d.once(&seen, bit) {
			return d.fail("%s appears twice", name)
		}
		if d.literalNext("null") {
			return d.literal("null")
		}
		start := d.pos
		img, err := d.image()
		if err == nil {
			*dst = img
			return nil
		}
		err = within(err, name)
		if !isolate {
			return err
		}
		// The image is not DynamoDB JSON; if it is still JSON, the record
		// can be set aside and the batch read on.
		d.pos = start
		if serr := d.skip(); serr != nil {
			return within(serr, name)
		}
		if *bad == nil {
			*bad = err
		}
		return nil
	}
	err := d.object(func(key string) error {
		switch key {
		case "Keys":
			return readImage(1, key, &r.Keys)
		case "NewImage":
			return readImage(2, key, &r.New)
		case "OldImage":
			return readImage(4, key, &r.Old)
		case "SequenceNumber":
			if !d.once(&seen, 8) {
				return d.fail("SequenceNumber appears twice")
			}
			seq, err := d.str()
			if err != nil {
				return within(err, key)
			}
			if !isDigits(seq) {
				return within(d.fail("sequence number %q is not a decimal number", seq), key)
			}
			r.SequenceNumber = streamtally.Seq(seq)
			return nil
		case "ApproximateCreationDateTime":
			if !d.once(&seen, 16) {
				return d.fail("ApproximateCreationDateTime appears twice")
			}
			if d.literalNext("null") {
				return d.literal("null")
			}
			num, err := d.number()
			if err != nil {
				return within(err, key)
			}
			ms, ok := epochMillis(num)
			if !ok {
				return within(d.fail("%s is not a time in seconds since 1970", num), key)
			}
			r.Created = time.UnixMilli(ms).UTC()
			return nil
		}
		return d.skip()
	})
	if err != nil {
		return err
	}
	if seen&8 == 0 {
		return d.fail("record has no SequenceNumber")
	}
	return nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// epochMillis converts a JSON number of seconds since 1970 to whole
// milliseconds, truncating, as the SDK does; it works on the decimal text
// so that no float rounding creeps in.
func epochMillis(num string) (int64, bool) {
	if num[0] == '-' {
		// Only a negative zero is a time since 1970.
		mant, _, _ := strings.Cut(strings.ToLower(num[1:]), "e")
		return 0, strings.Trim(mant, "0.") == ""
	}
	mant, exp := num, 0
	if i := strings.IndexAny(num, "eE"); i >= 0 {
		mant = num[:i]
		e := num[i+1:]
		neg := e[0] == '-'
		if e[0] == '+' || e[0] == '-' {
			e = e[1:]
		}
		for j := 0; j < len(e); j++ {
			if exp < 1000 {
				exp = exp*10 + int(e[j]-'0')
			}
		}
		if neg {
			exp = -exp
		}
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	// value = digits * 10^shift seconds; milliseconds shift three more.
	shift := exp - len(frac) + 3
	if shift < 0 {
		if -shift >= len(digits) {
			return 0, true
		}
		digits = digits[:len(digits)+shift]
		shift = 0
	}
	if digits == "" {
		return 0, true
	}
	// Beyond 15 digits of milliseconds is after the year 30 000.
	if len(digits)+shift > 15 {
		return 0, false
	}
	ms, err := strconv.ParseInt(digits+strings.Repeat("0", shift), 10, 64)
	return ms, err == nil
}

// image reads an object of attribute values.
func (d *decoder) image() (streamtally.Image, error) {
	var img streamtally.Image
	err := d.object(func(name string) error {
		if img == nil {
			img = streamtally.Image{}
		} else if _, dup := img[name]; dup {
			return within(d.fail("attribute appears twice"), name)
		}
		av, err := d.value()
		if err != nil {
			return within(err, name)
		}
		img[name] = av
		return nil
	})
	if err != nil {
		return nil, err
	}
	if img == nil {
		img = streamtally.Image{}
	}
	return img, nil
}

// value reads one attribute value: an object with exactly one type key.
func (d *decoder) value() (streamtally.Value, error) {
	if d.depth >= maxDepth {
		return nil, d.fail("nested more than %d levels", maxDepth)
	}
	d.depth++
	defer func() { d.depth-- }()
	if d.next() != '{' {
		return nil, d.fail("want an attribute value object, got %s", d.kind())
	}
	start := d.pos
	var out streamtally.Value
	var tag string
	err := d.object(func(key string) error {
		if out != nil {
			return d.fail("attribute value has two types, %s and %s", tag, key)
		}
		tag = key
		var err error
		out, err = d.typed(key)
		return within(err, key)
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		d.pos = start
		return nil, d.fail("attribute value has no type")
	}
	return out, nil
}

func (d *decoder) typed(tag string) (streamtally.Value, error) {
	switch tag {
	case "S":
		s, err := d.str()
		if err != nil {
			return nil, err
		}
		v := d.sv.new()
		v.Value = s
		return v, nil
	case "N":
		s, err := d.str()
		if err != nil {
			return nil, err
		}
		v := d.nv.new()
		v.Value = s
		return v, nil
	case "B":
		b, err := d.blob()
		if err != nil {
			return nil, err
		}
		v := d.bv.new()
		v.Value = b
		return v, nil
	case "BOOL":
		b, err := d.boolean()
		if err != nil {
			return nil, err
		}
		v := d.boolv.new()
		v.Value = b
		return v, nil
	case "NULL":
		b, err := d.boolean()
		if err != nil {
			return nil, err
		}
		v := d.nullv.new()
		v.Value = b
		return v, nil
	case "SS", "NS":
		ss, err := d.stringSet()
		if err != nil {
			return nil, err
		}
		if tag == "SS" {
			v := d.ssv.new()
			v.Value = ss
			return v, nil
		}
		v := d.nsv.new()
		v.Value = ss
		return v, nil
	case "BS":
		mark := len(d.blobs)
		err := d.array(func(i int) error {
			b, err := d.blob()
			d.blobs = append(d.blobs, b)
			return atIndex(err, i)
		})
		bs := make([][]byte, len(d.blobs)-mark)
		copy(bs, d.blobs[mark:])
		clear(d.blobs[mark:])
		d.blobs = d.blobs[:mark]
		if err != nil {
			return nil, err
		}
		v := d.bsv.new()
		v.Value = bs
		return v, nil
	case "L":
		mark := len(d.avs)
		err := d.array(func(i int) error {
			av, err := d.value()
			d.avs = append(d.avs, av)
			return atIndex(err, i)
		})
		l := make([]streamtally.Value, len(d.avs)-mark)
		copy(l, d.avs[mark:])
		clear(d.avs[mark:])
		d.avs = d.avs[:mark]
		if err != nil {
			return nil, err
		}
		v := d.lv.new()
		v.Value = l
		return v, nil
	case "M":
		m, err := d.image()
		if err != nil {
			return nil, err
		}
		v := d.mv.new()
		v.Value = m
		return v, nil
	}
	return nil, d.fail("unknown attribute type")
}

func (d *decoder) stringSet() ([]string, error) {
	mark := len(d.strs)
	err := d.array(func(i int) error {
		s, err := d.str()
		d.strs = append(d.strs, s)
		return atIndex(err, i)
	})
	ss := make([]string, len(d.strs)-mark)
	copy(ss, d.strs[mark:])
	d.strs = d.strs[:mark]
	return ss, err
}

// blob reads a base64 string into a slice cut from a shared block.
func (d *decoder) blob() ([]byte, error) {
	src, _, _, err := d.strBytes()
	if err != nil {
		return nil, err
	}
	if len(src) == 0 {
		return []byte{}, nil
	}
	n := base64.StdEncoding.DecodedLen(len(src))
	var dst []byte
	if n > 1024 {
		dst = make([]byte, n)
	} else {
		if len(d.bytes) < n {
			d.bytes = make([]byte, 4096)
		}
		dst = d.bytes[:n]
	}
	m, err := base64.StdEncoding.Decode(dst, src)
	if err != nil {
		return nil, d.fail("invalid base64: %v", err)
	}
	if m == 0 {
		return []byte{}, nil
	}
	if n <= 1024 {
		d.bytes = d.bytes[m:]
	}
	// The capacity ends with the value, so an append cannot overwrite the
	// next one.
	return dst[:m:m], nil
}

// AppendImage appends img as DynamoDB JSON to dst, attributes sorted by
// name so that equal images encode equally. Invalid UTF-8 in names and
// strings becomes U+FFFD; JSON cannot carry it.
func AppendImage(dst []byte, img streamtally.Image) ([]byte, error) {
	return appendImage(dst, img, 0)
}

// EncodeImage returns img as DynamoDB JSON; a nil image is null.
func EncodeImage(img streamtally.Image) ([]byte, error) {
	if img == nil {
		return []byte("null"), nil
	}
	return AppendImage(nil, img)
}

func appendImage(dst []byte, img streamtally.Image, depth int) ([]byte, error) {
	names := make([]string, 0, len(img))
	for k := range img {
		names = append(names, k)
	}
	slices.Sort(names)
	dst = append(dst, '{')
	for i, k := range names {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, k)
		dst = append(dst, ':')
		var err error
		if dst, err = appendValue(dst, img[k], depth); err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
	}
	return append(dst, '}'), nil
}

func appendValue(dst []byte, av streamtally.Value, depth int) ([]byte, error) {
	if depth >= maxDepth {
		return nil, fmt.Errorf("nested more than %d levels", maxDepth)
	}
	var err error
	switch v := av.(type) {
	case *streamtally.S:
		if v != nil {
			dst = append(dst, `{"S":`...)
			return append(appendString(dst, v.Value), '}'), nil
		}
	case *streamtally.N:
		if v != nil {
			dst = append(dst, `{"N":`...)
			return append(appendString(dst, v.Value), '}'), nil
		}
	case *streamtally.B:
		if v != nil {
			dst = append(dst, `{"B":"`...)
			dst = base64.StdEncoding.AppendEncode(dst, v.Value)
			return append(dst, `"}`...), nil
		}
	case *streamtally.Bool:
		if v != nil {
			return append(strconv.AppendBool(append(dst, `{"BOOL":`...), v.Value), '}'), nil
		}
	case *streamtally.Null:
		if v != nil {
			return append(strconv.AppendBool(append(dst, `{"NULL":`...), v.Value), '}'), nil
		}
	case *streamtally.SS:
		if v != nil {
			return append(appendStrings(append(dst, `{"SS":`...), v.Value), '}'), nil
		}
	case *streamtally.NS:
		if v != nil {
			return append(appendStrings(append(dst, `{"NS":`...), v.Value), '}'), nil
		}
	case *streamtally.BS:
		if v != nil {
			dst = append(dst, `{"BS":[`...)
			for i, b := range v.Value {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = append(dst, '"')
				dst = base64.StdEncoding.AppendEncode(dst, b)
				dst = append(dst, '"')
			}
			return append(dst, "]}"...), nil
		}
	case *streamtally.L:
		if v != nil {
			dst = append(dst, `{"L":[`...)
			for i, e := range v.Value {
				if i > 0 {
					dst = append(dst, ',')
				}
				if dst, err = appendValue(dst, e, depth+1); err != nil {
					return nil, fmt.Errorf("L[%d]: %w", i, err)
				}
			}
			return append(dst, "]}"...), nil
		}
	case *streamtally.M:
		if v != nil {
			dst = append(dst, `{"M":`...)
			if dst, err = appendImage(dst, v.Value, depth+1); err != nil {
				return nil, fmt.Errorf("M.%w", err)
			}
			return append(dst, '}'), nil
		}
	default:
		if av != nil {
			return nil, fmt.Errorf("cannot encode attribute value of type %T", av)
		}
	}
	return nil, errors.New("attribute has no value")
}

func appendStrings(dst []byte, ss []string) []byte {
	dst = append(dst, '[')
	for i, s := range ss {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, s)
	}
	return append(dst, ']')
}

const hexDigits = "0123456789abcdef"

func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || n != 1 {
				i += n
				continue
			}
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendRecord appends r as a stream record in DynamoDB JSON to dst. The
// shard is not part of a record's JSON; the creation time is written in
// milliseconds, as DynamoDB Streams carries it.
func AppendRecord(dst []byte, r *streamtally.Record) ([]byte, error) {
	if r.Malformed != nil {
		return nil, errors.New("encode record: it is malformed; its Raw holds it as it arrived")
	}
	switch r.Event {
	case streamtally.Insert, streamtally.Modify, streamtally.Remove:
	default:
		return nil, fmt.Errorf("encode record: unknown event %d", r.Event)
	}
	if !isDigits(string(r.SequenceNumber)) {
		return nil, fmt.Errorf("encode record: sequence number %q is not a decimal number", r.SequenceNumber)
	}
	dst = append(dst, `{"eventName":"`...)
	dst = append(dst, r.Event.String()...)
	dst = append(dst, `","dynamodb":{`...)
	if !r.Created.IsZero() {
		ms := r.Created.UnixMilli()
		if ms < 0 {
			return nil, fmt.Errorf("encode record %s: creation time %s is before 1970", r.SequenceNumber, r.Created)
		}
		dst = append(dst, `"ApproximateCreationDateTime":`...)
		dst = strconv.AppendInt(dst, ms/1000, 10)
		if f := ms % 1000; f != 0 {
			dst = append(dst, '.', byte('0'+f/100), byte('0'+f/10%10), byte('0'+f%10))
			for dst[len(dst)-1] == '0' {
				dst = dst[:len(dst)-1]
			}
		}
		dst = append(dst, ',')
	}
	for _, part := range []struct {
		name string
		img  streamtally.Image
	}{{"Keys", r.Keys}, {"NewImage", r.New}, {"OldImage", r.Old}} {
		if part.img == nil {
			continue
		}
		dst = append(dst, '"')
		dst = append(dst, part.name...)
		dst = append(dst, `":`...)
		var err error
		if dst, err = AppendImage(dst, part.img); err != nil {
			return nil, fmt.Errorf("encode record %s: %s.%w", r.SequenceNumber, part.name, err)
		}
		dst = append(dst, ',')
	}
	dst = append(dst, `"SequenceNumber":`...)
	dst = appendString(dst, string(r.SequenceNumber))
	return append(dst, "}}"...), nil
}

// EncodeRecord returns r as a stream record in DynamoDB JSON.
func EncodeRecord(r *streamtally.Record) ([]byte, error) { return AppendRecord(nil, r) }
