// Package streamstest provides an in-process DynamoDB Streams server for
// tests that need control over shard lineage.
//
// DynamoDB Local always exposes a single, never-closing shard, so it cannot
// exercise the parts of a consumer that matter most in production: reading a
// parent shard to completion before its children, noticing that a shard has
// closed, and juggling several shards at once. This server speaks just enough
// of the AWS JSON 1.0 protocol for the real SDK v2 dynamodbstreams.Client to
// talk to it, and lets a test shape the shard graph directly.
//
// It is not a general emulator: there is one stream, records are trimmed
// and shards removed only when a test says so, and only DescribeStream,
// GetShardIterator, GetRecords and ListStreams are implemented.
package streamstest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	targetPrefix = "DynamoDBStreams_20120810."
	// The SDK strips everything up to '#', so the namespace is cosmetic, but
	// matching what DynamoDB sends keeps captured traffic realistic.
	errorNamespace = "com.amazonaws.dynamodb.v20120810#"

	defaultDescribePageSize = 100 // DynamoDB's own DescribeStream maximum
	maxGetRecordsLimit      = 1000
)

// Record is one change to append to a shard.
//
// Images are DynamoDB-JSON attribute maps, e.g.
// {"pk": map[string]any{"S": "a"}}; Item builds them more readably.
type Record struct {
	// EventName is INSERT, MODIFY or REMOVE. Left empty it is inferred from
	// which images are present, which is what most tests want.
	EventName string
	// Keys defaults to the "pk" attribute of NewImage (or OldImage), because
	// the simulated table has a single hash key named pk.
	Keys     map[string]any
	OldImage map[string]any
	NewImage map[string]any
	// ApproximateCreation defaults to the time of Append.
	ApproximateCreation time.Time
}

// Server is a DynamoDB Streams endpoint backed by in-memory shards.
// Point an SDK client's BaseEndpoint at URL.
//
// The exported fields are fixed at construction and must not be modified:
// the HTTP handler reads them without locking.
type Server struct {
	URL         string
	StreamARN   string
	StreamLabel string
	TableName   string
	Region      string

	tb  testing.TB
	srv *httptest.Server

	mu sync.Mutex
	// shards keeps insertion order because DescribeStream pages through it;
	// a test that adds a child before its parent gets them listed that way.
	shards []*shard
	byID   map[string]*shard
	// lastSeq is server-wide rather than per shard so that every number
	// handed out (shard starts and records) is larger than all earlier ones:
	// a child created after its parent's records therefore sorts after them.
	lastSeq          uint64
	describePageSize int
	maxRecords       int
	// iterGen is embedded in every iterator; bumping it invalidates all
	// outstanding iterators, which is how ExpireIterators simulates the
	// 15-minute iterator lifetime without waiting.
	iterGen  int
	injected map[string][]string
	calls    map[string]int
}

type shard struct {
	id       string
	parentID string
	startSeq uint64
	closed   bool
	endSeq   uint64
	records  []storedRecord
	// trimmed is the last sequence number trimmed away: positions at or
	// before it can no longer be read.
	trimmed uint64
}

type storedRecord struct {
	seq       uint64
	eventName string
	created   time.Time
	// Images are marshalled at Append time so that later mutation of the
	// caller's maps cannot race with, or change, what the server returns.
	keys, oldImage, newImage json.RawMessage
}

// NewServer starts a server that is shut down when the test ends.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	const label = "2024-01-01T00:00:00.000"
	s := &Server{
		StreamLabel:      label,
		TableName:        "streamtally-test",
		Region:           "us-east-1",
		tb:               tb,
		byID:             map[string]*shard{},
		describePageSize: defaultDescribePageSize,
		injected:         map[string][]string{},
		calls:            map[string]int{},
	}
	s.StreamARN = "arn:aws:dynamodb:" + s.Region + ":000000000000:table/" + s.TableName + "/stream/" + label
	s.srv = httptest.NewServer(http.HandlerFunc(s.handle))
	s.URL = s.srv.URL
	tb.Cleanup(s.srv.Close)
	return s
}

// SetDescribePageSize sets how many shards DescribeStream returns per page
// when the request's Limit is absent or larger. Small values force consumers
// through the LastEvaluatedShardId paging path.
func (s *Server) SetDescribePageSize(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 {
		n = defaultDescribePageSize
	}
	s.describePageSize = n
}

// SetMaxRecordsPerCall caps records per GetRecords response regardless of the
// request's Limit (0 removes the cap). Real shards return short batches for
// reasons the client cannot see, so consumers must not assume Limit is met.
func (s *Server) SetMaxRecordsPerCall(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxRecords = n
}

// AddShard adds an open shard. parentID may be empty, and may name a shard
// that does not exist (yet, or any more): real streams list children whose
// parents have been trimmed away, and consumers must cope.
func (s *Server) AddShard(id, parentID string) {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if id == "" {
		s.tb.Fatalf("streamstest: AddShard: empty shard id")
	}
	if _, ok := s.byID[id]; ok {
		s.tb.Fatalf("streamstest: AddShard: shard %q already exists", id)
	}
	s.lastSeq++
	sh := &shard{id: id, parentID: parentID, startSeq: s.lastSeq}
	s.shards = append(s.shards, sh)
	s.byID[id] = sh
}

// Append adds records to an open shard, assigning each the next sequence
// number. It returns the assigned sequence numbers so tests can build
// AT_/AFTER_SEQUENCE_NUMBER iterators or assert on checkpoints.
func (s *Server) Append(shardID string, recs ...Record) []string {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	sh, ok := s.byID[shardID]
	if !ok {
		s.tb.Fatalf("streamstest: Append: unknown shard %q", shardID)
	}
	if sh.closed {
		s.tb.Fatalf("streamstest: Append: shard %q is closed", shardID)
	}
	seqs := make([]string, 0, len(recs))
	for i, r := range recs {
		sr, err := s.prepare(r)
		if err != nil {
			s.tb.Fatalf("streamstest: Append(%q) record %d: %v", shardID, i, err)
		}
		s.lastSeq++
		sr.seq = s.lastSeq
		sh.records = append(sh.records, sr)
		seqs = append(seqs, formatSeq(sr.seq))
	}
	return seqs
}

// CloseShard marks a shard closed. Its EndingSequenceNumber becomes the last
// record's sequence number, or the starting one if it never had records.
func (s *Server) CloseShard(id string) {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	sh, ok := s.byID[id]
	if !ok {
		s.tb.Fatalf("streamstest: CloseShard: unknown shard %q", id)
	}
	if sh.closed {
		return
	}
	sh.closed = true
	sh.endSeq = sh.startSeq
	if n := len(sh.records); n > 0 {
		sh.endSeq = sh.records[n-1].seq
	}
}

// Trim removes the records of a shard up to and including through, as
// the stream's 24-hour retention does: TRIM_HORIZON starts after them,
// and an iterator or a sequence number before through yields
// TrimmedDataAccessException.
func (s *Server) Trim(shardID, through string) {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	sh, ok := s.byID[shardID]
	if !ok {
		s.tb.Fatalf("streamstest: Trim: unknown shard %q", shardID)
	}
	n, err := strconv.ParseUint(through, 10, 64)
	if err != nil {
		s.tb.Fatalf("streamstest: Trim(%q, %q): %v", shardID, through, err)
	}
	i := sort.Search(len(sh.records), func(i int) bool { return sh.records[i].seq > n })
	sh.records = slices.Clone(sh.records[i:])
	sh.trimmed = max(sh.trimmed, n)
}

// RemoveShard takes a shard out of the stream, as DynamoDB does 24 hours
// after it closed: DescribeStream no longer lists it, and every call
// naming it yields ResourceNotFoundException.
func (s *Server) RemoveShard(id string) {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byID[id]; !ok {
		s.tb.Fatalf("streamstest: RemoveShard: unknown shard %q", id)
	}
	delete(s.byID, id)
	s.shards = slices.DeleteFunc(s.shards, func(sh *shard) bool { return sh.id == id })
}

// InjectErrors makes the next n calls of op (e.g. "GetRecords") fail with
// errName (e.g. "LimitExceededException"). InternalServerError is sent as
// HTTP 500, everything else as 400, mirroring DynamoDB. Injections queue up,
// so several calls can stack different errors in order.
func (s *Server) InjectErrors(op string, n int, errName string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.injected[op] = append(s.injected[op], errName)
	}
}

// ExpireIterators invalidates every shard iterator issued so far; using one
// afterwards yields ExpiredIteratorException.
func (s *Server) ExpireIterators() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.iterGen++
}

// Calls reports how many requests for op have arrived, including ones that
// failed through InjectErrors, so retry tests can count attempts.
func (s *Server) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// Image is what Item returns. It is a distinct type so that an Item nested
// inside another Item becomes an M attribute instead of being wrapped twice;
// it is assignable to the map[string]any fields of Record.
type Image map[string]any

// N marks a value as a DynamoDB number for Item; it stays a string so that
// decimal precision is never lost through float conversion.
type N string

// Raw is passed through Item untouched, for attribute values Item has no
// shorthand for, e.g. Raw{"SS": []string{"a", "b"}}.
type Raw map[string]any

// Item builds a DynamoDB-JSON attribute map from alternating names and
// values, so tests can write Item("pk", "a", "amount", N("10.5")) instead of
// nested literal maps. Values convert as: string→S, N and Go numbers→N,
// bool→BOOL, nil→NULL, []byte→B, []any→L, map[string]any (converted
// recursively) and Image→M, Raw→as is.
// It panics on malformed input since that is always a bug in the test.
func Item(kv ...any) Image {
	if len(kv)%2 != 0 {
		panic("streamstest.Item: odd number of arguments")
	}
	m := make(Image, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		name, ok := kv[i].(string)
		if !ok {
			panic(fmt.Sprintf("streamstest.Item: attribute name %v is %T, not string", kv[i], kv[i]))
		}
		m[name] = AttributeValue(kv[i+1])
	}
	return m
}

// AttributeValue converts a single Go value the way Item does.
func AttributeValue(v any) map[string]any {
	switch x := v.(type) {
	case nil:
		return map[string]any{"NULL": true}
	case Raw:
		return map[string]any(x)
	case Image:
		return map[string]any{"M": map[string]any(x)}
	case string:
		return map[string]any{"S": x}
	case N:
		return map[string]any{"N": string(x)}
	case bool:
		return map[string]any{"BOOL": x}
	case []byte:
		return map[string]any{"B": x} // encoding/json base64-encodes, as the wire format wants
	case int:
		return map[string]any{"N": strconv.Itoa(x)}
	case int64:
		return map[string]any{"N": strconv.FormatInt(x, 10)}
	case float64:
		return map[string]any{"N": strconv.FormatFloat(x, 'f', -1, 64)}
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = AttributeValue(e)
		}
		return map[string]any{"L": l}
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = AttributeValue(e)
		}
		return map[string]any{"M": m}
	default:
		panic(fmt.Sprintf("streamstest.AttributeValue: unsupported type %T", v))
	}
}

func (s *Server) prepare(r Record) (storedRecord, error) {
	sr := storedRecord{eventName: r.EventName, created: r.ApproximateCreation}
	if sr.eventName == "" {
		switch {
		case r.OldImage == nil && r.NewImage != nil:
			sr.eventName = "INSERT"
		case r.OldImage != nil && r.NewImage != nil:
			sr.eventName = "MODIFY"
		case r.OldImage != nil:
			sr.eventName = "REMOVE"
		default:
			return sr, fmt.Errorf("no EventName and no images to infer it from")
		}
	}
	switch sr.eventName {
	case "INSERT", "MODIFY", "REMOVE":
	default:
		return sr, fmt.Errorf("EventName %q is not INSERT, MODIFY or REMOVE", sr.eventName)
	}
	if sr.created.IsZero() {
		sr.created = time.Now()
	}
	keys := r.Keys
	if keys == nil {
		img := r.NewImage
		if img == nil {
			img = r.OldImage
		}
		pk, ok := img["pk"]
		if !ok {
			return sr, fmt.Errorf("no Keys and no pk attribute in the images")
		}
		keys = map[string]any{"pk": pk}
	}
	var err error
	if sr.keys, err = marshalImage(keys); err != nil {
		return sr, fmt.Errorf("Keys: %w", err)
	}
	if sr.oldImage, err = marshalImage(r.OldImage); err != nil {
		return sr, fmt.Errorf("OldImage: %w", err)
	}
	if sr.newImage, err = marshalImage(r.NewImage); err != nil {
		return sr, fmt.Errorf("NewImage: %w", err)
	}
	return sr, nil
}

var attributeTypes = map[string]bool{
	"S": true, "N": true, "B": true, "BOOL": true, "NULL": true,
	"M": true, "L": true, "SS": true, "NS": true, "BS": true,
}

// marshalImage catches the easy mistake of passing plain values
// ({"pk": "a"}) instead of attribute values; the SDK would otherwise fail
// with an opaque deserialization error far from the cause.
func marshalImage(img map[string]any) (json.RawMessage, error) {
	if img == nil {
		return nil, nil
	}
	b, err := json.Marshal(img)
	if err != nil {
		return nil, err
	}
	var check map[string]map[string]json.RawMessage
	if err := json.Unmarshal(b, &check); err != nil {
		return nil, fmt.Errorf("not a map of attribute values (use Item): %w", err)
	}
	for name, av := range check {
		if len(av) != 1 {
			return nil, fmt.Errorf("attribute %q must have exactly one type key, has %d", name, len(av))
		}
		for typ := range av {
			if !attributeTypes[typ] {
				return nil, fmt.Errorf("attribute %q has unknown type %q", name, typ)
			}
		}
	}
	return b, nil
}

// Zero-padded to a fixed width so that string order equals numeric order;
// consumers that compare checkpoints as strings then behave as in AWS, whose
// sequence numbers are also 21 digits.
func formatSeq(n uint64) string { return fmt.Sprintf("%021d", n) }

// ---- HTTP protocol ----

type apiError struct {
	status int
	name   string
	msg    string
}

func errf(name, format string, args ...any) *apiError {
	status := http.StatusBadRequest
	if name == "InternalServerError" {
		status = http.StatusInternalServerError
	}
	return &apiError{status: status, name: name, msg: fmt.Sprintf(format, args...)}
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	target := r.Header.Get("X-Amz-Target")
	if r.Method != http.MethodPost || !strings.HasPrefix(target, targetPrefix) {
		writeError(w, errf("UnknownOperationException", "expected POST with X-Amz-Target %s<Op>, got %s %q", targetPrefix, r.Method, target))
		return
	}
	op := strings.TrimPrefix(target, targetPrefix)
	// Read before locking so a slow client cannot stall other requests.
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, errf("SerializationException", "read request: %v", err))
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[op]++
	if q := s.injected[op]; len(q) > 0 {
		s.injected[op] = q[1:]
		writeError(w, errf(q[0], "injected by streamstest"))
		return
	}

	var (
		out  any
		aerr *apiError
	)
	switch op {
	case "DescribeStream":
		var in describeStreamInput
		if aerr = decode(body, &in); aerr == nil {
			out, aerr = s.describeStream(in)
		}
	case "GetShardIterator":
		var in getShardIteratorInput
		if aerr = decode(body, &in); aerr == nil {
			out, aerr = s.getShardIterator(in)
		}
	case "GetRecords":
		var in getRecordsInput
		if aerr = decode(body, &in); aerr == nil {
			out, aerr = s.getRecords(in)
		}
	case "ListStreams":
		var in listStreamsInput
		if aerr = decode(body, &in); aerr == nil {
			out = s.listStreams(in)
		}
	default:
		aerr = errf("UnknownOperationException", "operation %q is not implemented by streamstest", op)
	}
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	resp, err := json.Marshal(out)
	if err != nil {
		writeError(w, errf("InternalServerError", "marshal response: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.WriteHeader(http.StatusOK)
	w.Write(resp)
}

func decode(body []byte, v any) *apiError {
	if err := json.Unmarshal(body, v); err != nil {
		return errf("SerializationException", "decode request: %v", err)
	}
	return nil
}

func writeError(w http.ResponseWriter, e *apiError) {
	body, _ := json.Marshal(map[string]string{"__type": errorNamespace + e.name, "message": e.msg})
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.WriteHeader(e.status)
	w.Write(body)
}

// ---- DescribeStream / ListStreams ----

type describeStreamInput struct {
	StreamArn             string
	ExclusiveStartShardId string
	Limit                 *int
	ShardFilter           *struct {
		Type    string
		ShardId string
	}
}

type seqRange struct {
	StartingSequenceNumber string
	EndingSequenceNumber   string `json:",omitempty"`
}

type wireShard struct {
	ShardId             string
	ParentShardId       string `json:",omitempty"`
	SequenceNumberRange seqRange
}

type keySchemaElement struct {
	AttributeName string
	KeyType       string
}

type streamDescription struct {
	StreamArn               string
	StreamLabel             string
	StreamStatus            string
	StreamViewType          string
	TableName               string
	CreationRequestDateTime float64
	KeySchema               []keySchemaElement
	Shards                  []wireShard
	LastEvaluatedShardId    string `json:",omitempty"`
}

func (s *Server) describeStream(in describeStreamInput) (any, *apiError) {
	if in.StreamArn != s.StreamARN {
		return nil, errf("ResourceNotFoundException", "Requested resource not found: Stream: %s not found", in.StreamArn)
	}
	pageSize := s.describePageSize
	if in.Limit != nil {
		if *in.Limit < 1 || *in.Limit > defaultDescribePageSize {
			return nil, errf("ValidationException", "Limit must be between 1 and %d", defaultDescribePageSize)
		}
		pageSize = min(pageSize, *in.Limit)
	}

	candidates := s.shards
	if f := in.ShardFilter; f != nil {
		if f.Type != "CHILD_SHARDS" || f.ShardId == "" {
			return nil, errf("ValidationException", "unsupported ShardFilter %+v", *f)
		}
		candidates = nil
		for _, sh := range s.shards {
			if sh.parentID == f.ShardId {
				candidates = append(candidates, sh)
			}
		}
	}

	start := 0
	if in.ExclusiveStartShardId != "" {
		start = -1
		for i, sh := range candidates {
			if sh.id == in.ExclusiveStartShardId {
				start = i + 1
				break
			}
		}
		if start < 0 {
			return nil, errf("ResourceNotFoundException", "ExclusiveStartShardId %s not found", in.ExclusiveStartShardId)
		}
	}
	end := min(start+pageSize, len(candidates))

	desc := streamDescription{
		StreamArn:               s.StreamARN,
		StreamLabel:             s.StreamLabel,
		StreamStatus:            "ENABLED",
		StreamViewType:          "NEW_AND_OLD_IMAGES",
		TableName:               s.TableName,
		CreationRequestDateTime: 1704067200, // matches StreamLabel
		KeySchema:               []keySchemaElement{{AttributeName: "pk", KeyType: "HASH"}},
		Shards:                  []wireShard{},
	}
	for _, sh := range candidates[start:end] {
		ws := wireShard{
			ShardId:             sh.id,
			ParentShardId:       sh.parentID,
			SequenceNumberRange: seqRange{StartingSequenceNumber: formatSeq(sh.startSeq)},
		}
		if sh.closed {
			ws.SequenceNumberRange.EndingSequenceNumber = formatSeq(sh.endSeq)
		}
		desc.Shards = append(desc.Shards, ws)
	}
	if end < len(candidates) {
		desc.LastEvaluatedShardId = candidates[end-1].id
	}
	return map[string]any{"StreamDescription": desc}, nil
}

type listStreamsInput struct {
	TableName string
}

func (s *Server) listStreams(in listStreamsInput) any {
	streams := []map[string]string{}
	if in.TableName == "" || in.TableName == s.TableName {
		streams = append(streams, map[string]string{
			"StreamArn": s.StreamARN, "StreamLabel": s.StreamLabel, "TableName": s.TableName,
		})
	}
	return map[string]any{"Streams": streams}
}

// ---- GetShardIterator / GetRecords ----

type getShardIteratorInput struct {
	StreamArn         string
	ShardId           string
	ShardIteratorType string
	SequenceNumber    string
}

// iterator is the decoded form of a ShardIterator. Position is "after" a
// sequence number rather than an index so that the same encoding serves
// every iterator type and survives records being appended.
type iterator struct {
	Shard string `json:"s"`
	After uint64 `json:"a"`
	Gen   int    `json:"g"`
}

func (s *Server) encodeIterator(shardID string, after uint64) string {
	b, _ := json.Marshal(iterator{Shard: shardID, After: after, Gen: s.iterGen})
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *Server) getShardIterator(in getShardIteratorInput) (any, *apiError) {
	if in.StreamArn != s.StreamARN {
		return nil, errf("ResourceNotFoundException", "Requested resource not found: Stream: %s not found", in.StreamArn)
	}
	sh, ok := s.byID[in.ShardId]
	if !ok {
		return nil, errf("ResourceNotFoundException", "Requested resource not found: Shard does not exist")
	}
	var after uint64
	switch in.ShardIteratorType {
	case "TRIM_HORIZON":
		after = max(sh.startSeq-1, sh.trimmed) // startSeq >= 1, and no record carries startSeq
	case "LATEST":
		after = sh.lastSeq()
	case "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER":
		n, err := strconv.ParseUint(in.SequenceNumber, 10, 64)
		if err != nil || n < sh.startSeq || (sh.closed && n > sh.endSeq) {
			return nil, errf("ValidationException", "Invalid SequenceNumber %q for shard %s", in.SequenceNumber, sh.id)
		}
		after = n
		if in.ShardIteratorType == "AT_SEQUENCE_NUMBER" {
			after = n - 1
		}
		if after < sh.trimmed {
			return nil, errf("TrimmedDataAccessException", "records after %s of shard %s were trimmed", in.SequenceNumber, sh.id)
		}
	default:
		return nil, errf("ValidationException", "unsupported ShardIteratorType %q", in.ShardIteratorType)
	}
	return map[string]string{"ShardIterator": s.encodeIterator(sh.id, after)}, nil
}

func (sh *shard) lastSeq() uint64 {
	if n := len(sh.records); n > 0 {
		return sh.records[n-1].seq
	}
	return sh.startSeq
}

type getRecordsInput struct {
	ShardIterator string
	Limit         *int
}

type wireStreamRecord struct {
	ApproximateCreationDateTime float64
	Keys                        json.RawMessage `json:",omitempty"`
	NewImage                    json.RawMessage `json:",omitempty"`
	OldImage                    json.RawMessage `json:",omitempty"`
	SequenceNumber              string
	SizeBytes                   int64
	StreamViewType              string
}

type wireRecord struct {
	EventID      string           `json:"eventID"`
	EventName    string           `json:"eventName"`
	EventVersion string           `json:"eventVersion"`
	EventSource  string           `json:"eventSource"`
	AwsRegion    string           `json:"awsRegion"`
	Dynamodb     wireStreamRecord `json:"dynamodb"`
}

type getRecordsOutput struct {
	// Always present, even empty, as DynamoDB sends it.
	Records []wireRecord
	// Omitted once a closed shard is exhausted: that absence is the only
	// end-of-shard signal a consumer gets.
	NextShardIterator string `json:",omitempty"`
}

func (s *Server) getRecords(in getRecordsInput) (any, *apiError) {
	limit := maxGetRecordsLimit
	if in.Limit != nil {
		if *in.Limit < 1 || *in.Limit > maxGetRecordsLimit {
			return nil, errf("ValidationException", "Limit must be between 1 and %d", maxGetRecordsLimit)
		}
		limit = *in.Limit
	}
	if s.maxRecords > 0 {
		limit = min(limit, s.maxRecords)
	}

	raw, err := base64.RawURLEncoding.DecodeString(in.ShardIterator)
	var it iterator
	if err == nil {
		err = json.Unmarshal(raw, &it)
	}
	if err != nil {
		return nil, errf("ValidationException", "Invalid ShardIterator")
	}
	if it.Gen != s.iterGen {
		return nil, errf("ExpiredIteratorException", "Iterator expired")
	}
	sh, ok := s.byID[it.Shard]
	if !ok {
		return nil, errf("ResourceNotFoundException", "Requested resource not found: Shard does not exist")
	}
	if it.After < sh.trimmed {
		return nil, errf("TrimmedDataAccessException", "the iterator points before the trim horizon of shard %s", sh.id)
	}

	// Records are in sequence order, so the first unread one can be found by
	// binary search on the "after" position.
	i := sort.Search(len(sh.records), func(i int) bool { return sh.records[i].seq > it.After })
	batch := sh.records[i:min(i+limit, len(sh.records))]

	out := getRecordsOutput{Records: make([]wireRecord, 0, len(batch))}
	pos := it.After
	for _, r := range batch {
		out.Records = append(out.Records, wireRecord{
			EventID:      fmt.Sprintf("%032x", r.seq),
			EventName:    r.eventName,
			EventVersion: "1.1",
			EventSource:  "aws:dynamodb",
			AwsRegion:    s.Region,
			Dynamodb: wireStreamRecord{
				ApproximateCreationDateTime: float64(r.created.UnixMilli()) / 1000,
				Keys:                        r.keys,
				NewImage:                    r.newImage,
				OldImage:                    r.oldImage,
				SequenceNumber:              formatSeq(r.seq),
				SizeBytes:                   int64(len(r.keys) + len(r.newImage) + len(r.oldImage)),
				StreamViewType:              "NEW_AND_OLD_IMAGES",
			},
		})
		pos = r.seq
	}
	// The closing signal goes out with the batch that reaches the end rather
	// than on a following empty call, so consumers must process records that
	// arrive together with a nil NextShardIterator.
	if !sh.closed || i+len(batch) < len(sh.records) {
		out.NextShardIterator = s.encodeIterator(sh.id, pos)
	}
	return out, nil
}
