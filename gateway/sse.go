package gateway

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// event is one Server-Sent Event of one view, rendered once and shared by
// every client that receives it. Its id line is written per stream: the
// version on a view's stream, every view's version on a multiplexed one.
type event struct {
	view    string
	epoch   string // the epoch version counts in
	version int64
	kind    string // "snapshot" or "delta"
	from    int64  // a bucketed view's snapshot: the start of its range, Unix seconds
	body    []byte // the event and data lines and the blank line that ends the event
}

func newEvent(kind, view, epoch string, version int64, data []byte) *event {
	var b bytes.Buffer
	b.Grow(len(data) + 32)
	b.WriteString("event: ")
	b.WriteString(kind)
	b.WriteByte('\n')
	// The data is JSON on one line; a newline in it would end the field.
	for _, line := range bytes.Split(data, []byte("\n")) {
		b.WriteString("data: ")
		b.Write(line)
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return &event{view: view, epoch: epoch, version: version, kind: kind, body: b.Bytes()}
}

// sseWriter writes an event stream to one client.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration // for each flush: a client that stops reading is let go
}

// retryMS is the reconnect delay the stream asks browsers to use.
const retryMS = 1000

func startSSE(w http.ResponseWriter, rc *http.ResponseController, timeout time.Duration) (*sseWriter, error) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	// Proxies such as nginx would otherwise buffer the stream.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s := &sseWriter{w: w, rc: rc, timeout: timeout}
	if _, err := w.Write([]byte("retry: " + strconv.Itoa(retryMS) + "\n\n")); err != nil {
		return nil, err
	}
	return s, s.flush()
}

// eventID is one view's part of an event id: its version and the epoch
// the version counts in, "12@9f3a5c1e2b4d6f70". A client resuming from
// another epoch than the view's gets a snapshot.
func eventID(version int64, epoch string) string {
	return strconv.FormatInt(version, 10) + "@" + epoch
}

// parseEventID reads eventID's form; a bare version (no epoch) resumes
// nothing but a snapshot.
func parseEventID(s string) (version int64, epoch string, ok bool) {
	v, epoch, _ := strings.Cut(s, "@")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, "", false
	}
	return n, epoch, true
}

// write sends e with id, which a browser reconnecting sends back as
// Last-Event-ID.
func (s *sseWriter) write(id string, e *event) error {
	// An event larger than the response's buffer reaches the connection
	// here, not in flush; the deadline of the last flush may have passed
	// while the stream was idle.
	s.deadline()
	if _, err := s.w.Write([]byte("id: " + id + "\n")); err != nil {
		return err
	}
	_, err := s.w.Write(e.body)
	return err
}

// heartbeat is a comment line: EventSource ignores it, proxies see traffic.
func (s *sseWriter) heartbeat() error {
	if _, err := s.w.Write([]byte(":\n\n")); err != nil {
		return err
	}
	return s.flush()
}

func (s *sseWriter) flush() error {
	s.deadline()
	return s.rc.Flush()
}

func (s *sseWriter) deadline() {
	// Not every ResponseWriter supports deadlines (httptest's recorder
	// does not); a real connection does.
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
}
