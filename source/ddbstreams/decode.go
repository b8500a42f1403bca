package ddbstreams

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/internal/ddbjson"
)

// The SDK's deserializer turns a GetRecords page into typed attribute
// values through its generic schema machinery, which costs about twice the
// time and eight times the allocations of ddbjson.DecodeRecords, and
// then toRecords copies the result once more. It also fails the whole call
// on one record it cannot read (an attribute type it does not know), which
// would stall the shard. So the reader asks the client to hand it the raw
// page: a deserialize middleware, placed between the transport and the
// SDK's deserializer, decodes a successful response with DecodeRecords into
// a sink the reader put in the context, and leaves the SDK only the next
// iterator to read. Errors (non-2xx answers) pass through untouched, so the
// SDK still turns them into its typed exceptions.
//
// An API implementation that is not the SDK's client never runs the
// middleware; Read then converts the SDK records it returns.

// decodedPage receives one decoded GetRecords page.
type decodedPage struct {
	shard string
	recs  []streamtally.Record
	done  bool // the middleware ran and recs holds the page
}

type pageKey struct{}

// withPage returns ctx carrying p for the middleware to fill.
func withPage(ctx context.Context, p *decodedPage) context.Context {
	return context.WithValue(ctx, pageKey{}, p)
}

// fastDecode is the per-call client option that installs the middleware.
func fastDecode(o *dynamodbstreams.Options) {
	o.APIOptions = append(o.APIOptions, func(s *middleware.Stack) error {
		return s.Deserialize.Insert(pageDecoder{}, "OperationDeserializer", middleware.After)
	})
}

type pageDecoder struct{}

func (pageDecoder) ID() string { return "ddbjson.DecodeRecords" }

func (pageDecoder) HandleDeserialize(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (
	middleware.DeserializeOutput, middleware.Metadata, error,
) {
	out, md, err := next.HandleDeserialize(ctx, in)
	page, _ := ctx.Value(pageKey{}).(*decodedPage)
	resp, ok := out.RawResponse.(*smithyhttp.Response)
	if err != nil || page == nil || !ok || resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return out, md, err
	}
	// A page is up to a few MB: read it into one buffer of its size
	// rather than let io.ReadAll grow one by doubling.
	buf := bytes.NewBuffer(make([]byte, 0, max(resp.ContentLength, 0)+bytes.MinRead))
	_, err = buf.ReadFrom(resp.Body)
	resp.Body.Close()
	body := buf.Bytes()
	if err != nil {
		return out, md, fmt.Errorf("read GetRecords response: %w", err)
	}
	recs, nextIter, err := ddbjson.DecodeRecords(body, page.shard)
	if err != nil {
		return out, md, fmt.Errorf("decode GetRecords response: %w", err)
	}
	page.recs, page.done = recs, true
	// What is left for the SDK: the next iterator (absent at a closed
	// shard's end), and no records.
	rest := []byte("{}")
	if nextIter != "" {
		if rest, err = json.Marshal(struct{ NextShardIterator string }{nextIter}); err != nil {
			return out, md, err
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(rest))
	resp.ContentLength = int64(len(rest))
	resp.Header = resp.Header.Clone()
	if resp.Header == nil {
		resp.Header = http.Header{}
	}
	resp.Header.Del("X-Amz-Crc32")
	return out, md, nil
}
