package ddbjson

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	streamtypes "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/streamtally/streamtally"
)

// FromItem converts an item the SDK read from a table (Scan, GetItem) to
// the image a change record carries, so that a recount folds table items
// exactly as the daemon folds stream records.
func FromItem(it map[string]ddbtypes.AttributeValue) streamtally.Image {
	out := make(streamtally.Image, len(it))
	for k, v := range it {
		out[k] = fromItemValue(v)
	}
	return out
}

func fromItemValue(av ddbtypes.AttributeValue) streamtally.Value {
	switch v := av.(type) {
	case *ddbtypes.AttributeValueMemberS:
		return &streamtally.S{Value: v.Value}
	case *ddbtypes.AttributeValueMemberN:
		return &streamtally.N{Value: v.Value}
	case *ddbtypes.AttributeValueMemberB:
		return &streamtally.B{Value: v.Value}
	case *ddbtypes.AttributeValueMemberBOOL:
		return &streamtally.Bool{Value: v.Value}
	case *ddbtypes.AttributeValueMemberNULL:
		return &streamtally.Null{Value: v.Value}
	case *ddbtypes.AttributeValueMemberSS:
		return &streamtally.SS{Value: v.Value}
	case *ddbtypes.AttributeValueMemberNS:
		return &streamtally.NS{Value: v.Value}
	case *ddbtypes.AttributeValueMemberBS:
		return &streamtally.BS{Value: v.Value}
	case *ddbtypes.AttributeValueMemberL:
		l := make([]streamtally.Value, len(v.Value))
		for i, e := range v.Value {
			l[i] = fromItemValue(e)
		}
		return &streamtally.L{Value: l}
	case *ddbtypes.AttributeValueMemberM:
		return &streamtally.M{Value: FromItem(v.Value)}
	}
	return nil
}

// FromStream converts records the SDK's own deserializer read from shard
// to the fold's input, for a Streams client whose raw pages the decoder
// never sees. A record with an event name the fold does not know becomes
// a Record with Event 0, which contributes nothing.
func FromStream(shard string, in []streamtypes.Record) []streamtally.Record {
	out := make([]streamtally.Record, len(in))
	for i := range in {
		r := &in[i]
		rec := streamtally.Record{Shard: shard}
		switch r.EventName {
		case streamtypes.OperationTypeInsert:
			rec.Event = streamtally.Insert
		case streamtypes.OperationTypeModify:
			rec.Event = streamtally.Modify
		case streamtypes.OperationTypeRemove:
			rec.Event = streamtally.Remove
		}
		if d := r.Dynamodb; d != nil {
			rec.SequenceNumber = streamtally.Seq(aws.ToString(d.SequenceNumber))
			rec.Keys, rec.Old, rec.New = fromStreamImage(d.Keys), fromStreamImage(d.OldImage), fromStreamImage(d.NewImage)
			rec.Created = aws.ToTime(d.ApproximateCreationDateTime)
		}
		out[i] = rec
	}
	return out
}

func fromStreamImage(img map[string]streamtypes.AttributeValue) streamtally.Image {
	if img == nil {
		return nil
	}
	out := make(streamtally.Image, len(img))
	for k, v := range img {
		out[k] = fromStreamValue(v)
	}
	return out
}

func fromStreamValue(av streamtypes.AttributeValue) streamtally.Value {
	switch v := av.(type) {
	case *streamtypes.AttributeValueMemberS:
		return &streamtally.S{Value: v.Value}
	case *streamtypes.AttributeValueMemberN:
		return &streamtally.N{Value: v.Value}
	case *streamtypes.AttributeValueMemberB:
		return &streamtally.B{Value: v.Value}
	case *streamtypes.AttributeValueMemberBOOL:
		return &streamtally.Bool{Value: v.Value}
	case *streamtypes.AttributeValueMemberNULL:
		return &streamtally.Null{Value: v.Value}
	case *streamtypes.AttributeValueMemberSS:
		return &streamtally.SS{Value: v.Value}
	case *streamtypes.AttributeValueMemberNS:
		return &streamtally.NS{Value: v.Value}
	case *streamtypes.AttributeValueMemberBS:
		return &streamtally.BS{Value: v.Value}
	case *streamtypes.AttributeValueMemberL:
		l := make([]streamtally.Value, len(v.Value))
		for i, e := range v.Value {
			l[i] = fromStreamValue(e)
		}
		return &streamtally.L{Value: l}
	case *streamtypes.AttributeValueMemberM:
		return &streamtally.M{Value: fromStreamImage(v.Value)}
	}
	return nil
}
