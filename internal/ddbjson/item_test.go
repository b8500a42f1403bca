package ddbjson

import (
	"reflect"
	"testing"

	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/streamtally/streamtally"
)

func TestItemImageKeepsEveryAttributeType(t *testing.T) {
	item := map[string]ddbtypes.AttributeValue{
		"s":    &ddbtypes.AttributeValueMemberS{Value: "Web"},
		"n":    &ddbtypes.AttributeValueMemberN{Value: "10.50"},
		"b":    &ddbtypes.AttributeValueMemberB{Value: []byte{1, 2}},
		"bool": &ddbtypes.AttributeValueMemberBOOL{Value: true},
		"null": &ddbtypes.AttributeValueMemberNULL{Value: true},
		"ss":   &ddbtypes.AttributeValueMemberSS{Value: []string{"a", "b"}},
		"ns":   &ddbtypes.AttributeValueMemberNS{Value: []string{"1", "2"}},
		"bs":   &ddbtypes.AttributeValueMemberBS{Value: [][]byte{{3}}},
		"l": &ddbtypes.AttributeValueMemberL{Value: []ddbtypes.AttributeValue{
			&ddbtypes.AttributeValueMemberS{Value: "x"},
			&ddbtypes.AttributeValueMemberM{Value: map[string]ddbtypes.AttributeValue{"y": &ddbtypes.AttributeValueMemberN{Value: "1"}}},
		}},
		"m": &ddbtypes.AttributeValueMemberM{Value: map[string]ddbtypes.AttributeValue{
			"country": &ddbtypes.AttributeValueMemberS{Value: "DE"},
		}},
	}
	want := streamtally.Image{
		"s":    &streamtally.S{Value: "Web"},
		"n":    &streamtally.N{Value: "10.50"},
		"b":    &streamtally.B{Value: []byte{1, 2}},
		"bool": &streamtally.Bool{Value: true},
		"null": &streamtally.Null{Value: true},
		"ss":   &streamtally.SS{Value: []string{"a", "b"}},
		"ns":   &streamtally.NS{Value: []string{"1", "2"}},
		"bs":   &streamtally.BS{Value: [][]byte{{3}}},
		"l": &streamtally.L{Value: []streamtally.Value{
			&streamtally.S{Value: "x"},
			&streamtally.M{Value: map[string]streamtally.Value{"y": &streamtally.N{Value: "1"}}},
		}},
		"m": &streamtally.M{Value: map[string]streamtally.Value{
			"country": &streamtally.S{Value: "DE"},
		}},
	}
	if got := FromItem(item); !reflect.DeepEqual(got, want) {
		t.Errorf("ItemImage = %#v\nwant %#v", got, want)
	}
}
