package kurrenttest

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v1/shared"
	streamspb "github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v1/streams"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// readBatch is how many records a subscription takes from the log at a time.
const readBatch = 256

// Read serves stream and $all reads, and catch-up subscriptions to both.
func (s *streamsServer) Read(req *streamspb.ReadReq, srv streamspb.Streams_ReadServer) error {
	o := req.GetOptions()
	if o == nil {
		return status.Error(codes.InvalidArgument, "read request has no options")
	}
	w := eventWriter{srv: srv, structured: o.GetUuidOption().GetString_() == nil}
	f, err := newFilter(o.GetFilter())
	if err != nil {
		return err
	}
	_, subscribe := o.CountOption.(*streamspb.ReadReq_Options_Subscription)
	backwards := o.GetReadDirection() == streamspb.ReadReq_Options_Backwards
	switch so := o.StreamOption.(type) {
	case *streamspb.ReadReq_Options_Stream:
		if f != nil {
			return status.Error(codes.InvalidArgument, "filters apply to $all only")
		}
		name := string(so.Stream.GetStreamIdentifier().GetStreamName())
		if subscribe {
			return s.subscribeStream(so.Stream, name, w)
		}
		return s.readStream(so.Stream, name, o.GetCount(), backwards, w)
	case *streamspb.ReadReq_Options_All:
		if subscribe {
			return s.subscribeAll(so.All, f, o.GetFilter(), w)
		}
		return s.readAll(so.All, f, o.GetCount(), backwards, w)
	}
	return status.Error(codes.InvalidArgument, "read request names neither a stream nor $all")
}

func (s *streamsServer) readStream(so *streamspb.ReadReq_Options_StreamOptions, name string, count uint64, backwards bool, w eventWriter) error {
	rs := s.log.stream(name)
	if rs == nil {
		return w.srv.Send(&streamspb.ReadResp{Content: &streamspb.ReadResp_StreamNotFound_{
			StreamNotFound: &streamspb.ReadResp_StreamNotFound{StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(name)}},
		}})
	}
	last := uint64(len(rs) - 1)
	var from uint64
	switch ro := so.RevisionOption.(type) {
	case *streamspb.ReadReq_Options_StreamOptions_Revision:
		from = ro.Revision
	case *streamspb.ReadReq_Options_StreamOptions_Start:
		from = 0
	case *streamspb.ReadReq_Options_StreamOptions_End:
		from = last + 1
		if backwards {
			from = last
		}
	}
	if backwards {
		if from > last {
			from = last
		}
		for i := int64(from); i >= 0 && count > 0; i-- {
			if err := w.send(rs[i]); err != nil {
				return err
			}
			count--
		}
		return nil
	}
	for i := from; i <= last && count > 0; i++ {
		if err := w.send(rs[i]); err != nil {
			return err
		}
		count--
	}
	return nil
}

func (s *streamsServer) readAll(ao *streamspb.ReadReq_Options_AllOptions, f *filter, count uint64, backwards bool, w eventWriter) error {
	var i int
	switch p := ao.AllOption.(type) {
	case *streamspb.ReadReq_Options_AllOptions_Start:
		i = 0
	case *streamspb.ReadReq_Options_AllOptions_End:
		i = s.log.length()
	case *streamspb.ReadReq_Options_AllOptions_Position:
		// Forwards from a position includes it; backwards starts before it.
		i = s.log.indexOf(p.Position.GetCommitPosition(), p.Position.GetPreparePosition(), false)
	}
	if backwards {
		for i--; i >= 0 && count > 0; i-- {
			rs, _ := s.log.allFrom(i, 1)
			if len(rs) == 1 && f.match(rs[0]) {
				if err := w.send(rs[0]); err != nil {
					return err
				}
				count--
			}
		}
		return nil
	}
	for count > 0 {
		rs, _ := s.log.allFrom(i, readBatch)
		if len(rs) == 0 {
			return nil
		}
		for _, r := range rs {
			if !f.match(r) {
				continue
			}
			if err := w.send(r); err != nil {
				return err
			}
			if count--; count == 0 {
				return nil
			}
		}
		i += len(rs)
	}
	return nil
}

// subscribeStream sends the stream's events after the starting revision
// (exclusive), then "caught up", then new events as they are appended, until the
// client goes away or the server stops.
func (s *streamsServer) subscribeStream(so *streamspb.ReadReq_Options_StreamOptions, name string, w eventWriter) error {
	var next uint64
	switch ro := so.RevisionOption.(type) {
	case *streamspb.ReadReq_Options_StreamOptions_Revision:
		next = ro.Revision + 1
	case *streamspb.ReadReq_Options_StreamOptions_Start:
		next = 0
	case *streamspb.ReadReq_Options_StreamOptions_End:
		next = uint64(len(s.log.stream(name)))
	}
	stopping := s.stoppingChan()
	if err := w.confirm(); err != nil {
		return err
	}
	ctx := w.srv.Context()
	caughtUp := false
	for {
		changed := s.log.wait()
		rs := s.log.stream(name)
		for ; next < uint64(len(rs)); next++ {
			if err := w.send(rs[next]); err != nil {
				return err
			}
		}
		if !caughtUp {
			caughtUp = true
			cu := &streamspb.ReadResp_CaughtUp{Timestamp: timestamppb.Now()}
			if len(rs) > 0 {
				rev := int64(len(rs) - 1)
				cu.StreamRevision = &rev
			}
			if err := w.srv.Send(&streamspb.ReadResp{Content: &streamspb.ReadResp_CaughtUp_{CaughtUp: cu}}); err != nil {
				return err
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-stopping:
			return status.Error(codes.Unavailable, "server is shutting down")
		}
	}
}

// subscribeAll is subscribeStream for $all, with the server-side filter and its
// checkpoints.
func (s *streamsServer) subscribeAll(ao *streamspb.ReadReq_Options_AllOptions, f *filter, fo *streamspb.ReadReq_Options_FilterOptions, w eventWriter) error {
	var next int
	switch p := ao.AllOption.(type) {
	case *streamspb.ReadReq_Options_AllOptions_Start:
		next = 0
	case *streamspb.ReadReq_Options_AllOptions_End:
		next = s.log.length()
	case *streamspb.ReadReq_Options_AllOptions_Position:
		next = s.log.indexOf(p.Position.GetCommitPosition(), p.Position.GetPreparePosition(), true)
	}
	// A filtered subscription reports a checkpoint every window × multiplier
	// records it has looked at, so a client can save progress through long
	// stretches of records that do not match.
	interval := 0
	if f != nil {
		window := int(fo.GetMax())
		if window <= 0 {
			window = 32
		}
		interval = window * int(max(fo.GetCheckpointIntervalMultiplier(), 1))
	}
	stopping := s.stoppingChan()
	if err := w.confirm(); err != nil {
		return err
	}
	ctx := w.srv.Context()
	caughtUp, scanned := false, 0
	for {
		changed := s.log.wait()
		for {
			rs, _ := s.log.allFrom(next, readBatch)
			if len(rs) == 0 {
				break
			}
			for _, r := range rs {
				next++
				if f.match(r) {
					if err := w.send(r); err != nil {
						return err
					}
				}
				if scanned++; interval > 0 && scanned%interval == 0 {
					if err := w.checkpoint(r); err != nil {
						return err
					}
				}
			}
		}
		if !caughtUp {
			caughtUp = true
			cu := &streamspb.ReadResp_CaughtUp{Timestamp: timestamppb.Now()}
			if last := s.log.last(); last != nil {
				cu.Position = &streamspb.ReadResp_Position{CommitPosition: last.commit, PreparePosition: last.prepare}
			}
			if err := w.srv.Send(&streamspb.ReadResp{Content: &streamspb.ReadResp_CaughtUp_{CaughtUp: cu}}); err != nil {
				return err
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-stopping:
			return status.Error(codes.Unavailable, "server is shutting down")
		}
	}
}

// eventWriter turns records into read responses.
type eventWriter struct {
	srv        streamspb.Streams_ReadServer
	structured bool // ids as two int64s rather than strings
}

func (w eventWriter) confirm() error {
	var id [16]byte
	rand.Read(id[:])
	return w.srv.Send(&streamspb.ReadResp{Content: &streamspb.ReadResp_Confirmation{
		Confirmation: &streamspb.ReadResp_SubscriptionConfirmation{SubscriptionId: uuidString(id)},
	}})
}

func (w eventWriter) checkpoint(r *record) error {
	return w.srv.Send(&streamspb.ReadResp{Content: &streamspb.ReadResp_Checkpoint_{
		Checkpoint: &streamspb.ReadResp_Checkpoint{CommitPosition: r.commit, PreparePosition: r.prepare, Timestamp: timestamppb.Now()},
	}})
}

func (w eventWriter) send(r *record) error {
	return w.srv.Send(&streamspb.ReadResp{Content: &streamspb.ReadResp_Event{Event: &streamspb.ReadResp_ReadEvent{
		Event: &streamspb.ReadResp_ReadEvent_RecordedEvent{
			Id:               toUUID(r.id, w.structured),
			StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(r.stream)},
			StreamRevision:   r.revision,
			PreparePosition:  r.prepare,
			CommitPosition:   r.commit,
			Metadata:         r.metadata,
			CustomMetadata:   r.custom,
			Data:             r.data,
		},
		Position: &streamspb.ReadResp_ReadEvent_CommitPosition{CommitPosition: r.commit},
	}}})
}

// filter is a $all filter on stream names or event types, by prefixes or a
// regular expression. The double uses Go's RE2 syntax; KurrentDB uses .NET's,
// which also has look-around and backreferences.
type filter struct {
	onType   bool
	prefixes []string
	re       *regexp.Regexp
}

func newFilter(fo *streamspb.ReadReq_Options_FilterOptions) (*filter, error) {
	if fo == nil {
		return nil, nil
	}
	var e *streamspb.ReadReq_Options_FilterOptions_Expression
	f := &filter{}
	switch x := fo.Filter.(type) {
	case *streamspb.ReadReq_Options_FilterOptions_StreamIdentifier:
		e = x.StreamIdentifier
	case *streamspb.ReadReq_Options_FilterOptions_EventType:
		e, f.onType = x.EventType, true
	default:
		return nil, status.Error(codes.InvalidArgument, "filter has no expression")
	}
	f.prefixes = e.GetPrefix()
	if re := e.GetRegex(); re != "" {
		var err error
		if f.re, err = regexp.Compile(re); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "filter regex: %v", err)
		}
	}
	if f.re == nil && len(f.prefixes) == 0 {
		return nil, status.Error(codes.InvalidArgument, "filter has neither prefixes nor a regex")
	}
	return f, nil
}

// match reports whether r passes the filter; a nil filter passes everything.
func (f *filter) match(r *record) bool {
	if f == nil {
		return true
	}
	s := r.stream
	if f.onType {
		s = r.metadata["type"]
	}
	if f.re != nil {
		return f.re.MatchString(s)
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func toUUID(id [16]byte, structured bool) *shared.UUID {
	if !structured {
		return &shared.UUID{Value: &shared.UUID_String_{String_: uuidString(id)}}
	}
	return &shared.UUID{Value: &shared.UUID_Structured_{Structured: &shared.UUID_Structured{
		MostSignificantBits:  int64(binary.BigEndian.Uint64(id[:8])),
		LeastSignificantBits: int64(binary.BigEndian.Uint64(id[8:])),
	}}}
}

func fromUUID(u *shared.UUID) ([16]byte, error) {
	var id [16]byte
	switch v := u.GetValue().(type) {
	case *shared.UUID_Structured_:
		binary.BigEndian.PutUint64(id[:8], uint64(v.Structured.GetMostSignificantBits()))
		binary.BigEndian.PutUint64(id[8:], uint64(v.Structured.GetLeastSignificantBits()))
		return id, nil
	case *shared.UUID_String_:
		return parseUUID(v.String_)
	}
	rand.Read(id[:])
	id[6] = id[6]&0x0f | 0x40
	id[8] = id[8]&0x3f | 0x80
	return id, nil
}

func uuidString(id [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", id[0:4], id[4:6], id[6:8], id[8:10], id[10:])
}

func parseUUID(s string) ([16]byte, error) {
	var id [16]byte
	h := strings.ReplaceAll(s, "-", "")
	if len(s) != 36 || len(h) != 32 {
		return id, status.Errorf(codes.InvalidArgument, "%q is not a UUID", s)
	}
	if _, err := hex.Decode(id[:], []byte(h)); err != nil {
		return id, status.Errorf(codes.InvalidArgument, "%q is not a UUID", s)
	}
	return id, nil
}

// ticks returns t as .NET ticks (100 ns) since the Unix epoch, the form of the
// "created" metadata KurrentDB attaches to every event.
func ticks(t time.Time) string {
	return fmt.Sprint(t.UnixNano() / 100)
}
