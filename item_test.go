package streamtally

import (
	"reflect"
	"testing"

	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
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
	want := Image{
		"s":    &types.AttributeValueMemberS{Value: "Web"},
		"n":    &types.AttributeValueMemberN{Value: "10.50"},
		"b":    &types.AttributeValueMemberB{Value: []byte{1, 2}},
		"bool": &types.AttributeValueMemberBOOL{Value: true},
		"null": &types.AttributeValueMemberNULL{Value: true},
		"ss":   &types.AttributeValueMemberSS{Value: []string{"a", "b"}},
		"ns":   &types.AttributeValueMemberNS{Value: []string{"1", "2"}},
		"bs":   &types.AttributeValueMemberBS{Value: [][]byte{{3}}},
		"l": &types.AttributeValueMemberL{Value: []types.AttributeValue{
			&types.AttributeValueMemberS{Value: "x"},
			&types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"y": &types.AttributeValueMemberN{Value: "1"}}},
		}},
		"m": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{
			"country": &types.AttributeValueMemberS{Value: "DE"},
		}},
	}
	if got := ItemImage(item); !reflect.DeepEqual(got, want) {
		t.Errorf("ItemImage = %#v\nwant %#v", got, want)
	}
}
