package streamtally

// Value is one attribute value of an item, as DynamoDB types it. The
// concrete types are named after DynamoDB's type tags ({"S": ...},
// {"N": ...}), so that a reader who knows DynamoDB JSON knows them too.
// They are the project's own rather than the AWS SDK's, so that the fold
// and everything else downstream of the codec stay free of the SDK.
type Value interface{ isValue() }

// Image is an item, or its key, as a change record carries it.
type Image = map[string]Value

type (
	// S is a string.
	S struct{ Value string }
	// N is a number, kept as its decimal text so that no digit is lost.
	N struct{ Value string }
	// B is a binary value.
	B struct{ Value []byte }
	// Bool is a boolean.
	Bool struct{ Value bool }
	// Null is DynamoDB's NULL type; Value is always true on the wire.
	Null struct{ Value bool }
	// SS is a string set.
	SS struct{ Value []string }
	// NS is a number set.
	NS struct{ Value []string }
	// BS is a binary set.
	BS struct{ Value [][]byte }
	// L is a list.
	L struct{ Value []Value }
	// M is a map.
	M struct{ Value map[string]Value }
)

func (*S) isValue()    {}
func (*N) isValue()    {}
func (*B) isValue()    {}
func (*Bool) isValue() {}
func (*Null) isValue() {}
func (*SS) isValue()   {}
func (*NS) isValue()   {}
func (*BS) isValue()   {}
func (*L) isValue()    {}
func (*M) isValue()    {}
