package ddbstreams_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"testing"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"

	"github.com/streamtally/streamtally/internal/testenv"
	"github.com/streamtally/streamtally/source/ddbstreams"
)

func TestResolveFindsTheTablesStreamAndRefusesOneWithoutBothImages(t *testing.T) {
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
			arn, err := ddbstreams.Resolve(t.Context(), ddb, streams, table, "")
			var streamErr *ddbstreams.StreamError
			if tc.wantError {
				if !errors.As(err, &streamErr) {
					t.Fatalf("Resolve = %q, %v; want a *StreamError", arn, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			out, err := ddb.DescribeTable(t.Context(), &dynamodb.DescribeTableInput{TableName: aws.String(table)})
			if err != nil {
				t.Fatal(err)
			}
			if want := aws.ToString(out.Table.LatestStreamArn); arn != want {
				t.Errorf("Resolve = %q, want the table's stream %q", arn, want)
			}
			// Given the ARN, it checks that stream instead of looking
			// the table up.
			if got, err := ddbstreams.Resolve(t.Context(), ddb, streams, "no-such-table", arn); err != nil || got != arn {
				t.Errorf("Resolve by ARN = %q, %v; want %q", got, err, arn)
			}
		})
	}
}

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func awsConfig(t *testing.T) aws.Config {
	t.Helper()
	cfg, err := awsconfig.LoadDefaultConfig(t.Context(),
		awsconfig.WithRegion("us-east-1"),
		awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("x", "x", "")))
	if err != nil {
		t.Fatalf("load AWS config: %v", err)
	}
	return cfg
}

func newDynamo(t *testing.T) *dynamodb.Client {
	t.Helper()
	endpoint := testenv.DynamoDB(t)
	return dynamodb.NewFromConfig(awsConfig(t), func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(endpoint) })
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9_.-]`)

func tableName(t *testing.T) string {
	return fmt.Sprintf("%s-%08x", unsafeName.ReplaceAllString(t.Name(), "_"), rand.Uint32())
}
