package streamtally

import (
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
)

// ItemImage converts an item read from a table (Scan, GetItem) to the image
// type stream records carry. The SDK declares the two attribute value types
// in separate packages although their shapes are the same, and the fold
// reads only the stream's.
func ItemImage(it map[string]ddbtypes.AttributeValue) Image {
	out := make(Image, len(it))
	for k, v := range it {
		out[k] = itemValue(v)
	}
	return out
}

func itemValue(av ddbtypes.AttributeValue) types.AttributeValue {
	switch v := av.(type) {
	case *ddbtypes.AttributeValueMemberS:
		return &types.AttributeValueMemberS{Value: v.Value}
	case *ddbtypes.AttributeValueMemberN:
		return &types.AttributeValueMemberN{Value: v.Value}
	case *ddbtypes.AttributeValueMemberB:
		return &types.AttributeValueMemberB{Value: v.Value}
	case *ddbtypes.AttributeValueMemberBOOL:
		return &types.AttributeValueMemberBOOL{Value: v.Value}
	case *ddbtypes.AttributeValueMemberNULL:
		return &types.AttributeValueMemberNULL{Value: v.Value}
	case *ddbtypes.AttributeValueMemberSS:
		return &types.AttributeValueMemberSS{Value: v.Value}
	case *ddbtypes.AttributeValueMemberNS:
		return &types.AttributeValueMemberNS{Value: v.Value}
	case *ddbtypes.AttributeValueMemberBS:
		return &types.AttributeValueMemberBS{Value: v.Value}
	case *ddbtypes.AttributeValueMemberL:
		l := make([]types.AttributeValue, len(v.Value))
		for i, e := range v.Value {
			l[i] = itemValue(e)
		}
		return &types.AttributeValueMemberL{Value: l}
	case *ddbtypes.AttributeValueMemberM:
		return &types.AttributeValueMemberM{Value: ItemImage(v.Value)}
	}
	return nil
}
