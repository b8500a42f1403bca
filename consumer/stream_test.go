package consumer_test

import (
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"

	"github.com/streamtally/streamtally/consumer"
)

func TestResolveStream(t *testing.T) {
	t.Parallel()
	ddb := newDynamo(t)
	streams := dynamodbstreams.NewFromConfig(awsConfig(t), func(o *dynamodbstreams.Options) {
		o.BaseEndpoint = ddb.Options().BaseEndpoint
	})
	create := func(t *testing.T, spec *ddbtypes.StreamSpecification) string {
		t.Helper()
		name := tableName(t)
		_, err := ddb.CreateTable(t.Context(), &dynamodb.CreateTableInput{
			TableName:            aws.String(name),
			AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
			KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: ddbtypes.KeyTypeHash}},
			BillingMode:          ddbtypes.BillingModePayPerRequest,
			StreamSpecification:  spec,
		})
		if err != nil {
			t.Fatalf("CreateTable: %v", err)
		}
		return name
	}
	for _, tc := range []struct {
		name      string
		spec      *ddbtypes.StreamSpecification
		disable   bool // turn the stream off after creating the table
		wantError bool
	}{
		{"both images", &ddbtypes.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: ddbtypes.StreamViewTypeNewAndOldImages}, false, false},
		{"no stream", nil, false, true},
		{"stream disabled", &ddbtypes.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: ddbtypes.StreamViewTypeNewAndOldImages}, true, true},
		{"new image only", &ddbtypes.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: ddbtypes.StreamViewTypeNewImage}, false, true},
		{"keys only", &ddbtypes.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: ddbtypes.StreamViewTypeKeysOnly}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			table := create(t, tc.spec)
			if tc.disable {
				_, err := ddb.UpdateTable(t.Context(), &dynamodb.UpdateTableInput{
					TableName:           aws.String(table),
					StreamSpecification: &ddbtypes.StreamSpecification{StreamEnabled: aws.Bool(false)},
				})
				if err != nil {
					t.Fatalf("disable stream: %v", err)
				}
			}
			arn, err := consumer.ResolveStream(t.Context(), ddb, streams, table, "")
			var streamErr *consumer.StreamError
			if tc.wantError {
				if !errors.As(err, &streamErr) {
					t.Fatalf("ResolveStream = %q, %v; want a *StreamError", arn, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ResolveStream: %v", err)
			}
			out, err := ddb.DescribeTable(t.Context(), &dynamodb.DescribeTableInput{TableName: aws.String(table)})
			if err != nil {
				t.Fatal(err)
			}
			if want := aws.ToString(out.Table.LatestStreamArn); arn != want {
				t.Errorf("ResolveStream = %q, want the table's stream %q", arn, want)
			}
			// Given the ARN, it checks that stream instead of looking
			// the table up.
			if got, err := consumer.ResolveStream(t.Context(), ddb, streams, "no-such-table", arn); err != nil || got != arn {
				t.Errorf("ResolveStream by ARN = %q, %v; want %q", got, err, arn)
			}
		})
	}
}
