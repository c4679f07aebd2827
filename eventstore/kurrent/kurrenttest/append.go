package kurrenttest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"time"

	"github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v1/shared"
	streamspb "github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v1/streams"
	v2errors "github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v2/streams/errors"
	v2 "github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v2/streams/streams"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Expected-state constants of the v2 protocol (ExpectedRevisionConstants).
const (
	stateNoStream = -1
	stateAny      = -2
	stateExists   = -4
)

// Append serves the v1 single-stream append: an options message, then the
// events. A failed expectation is not a gRPC error but a WrongExpectedVersion
// result, which the client turns into ErrorCodeWrongExpectedVersion.
func (s *streamsServer) Append(srv streamspb.Streams_AppendServer) error {
	first, err := srv.Recv()
	if err != nil {
		return err
	}
	opts := first.GetOptions()
	if opts == nil {
		return status.Error(codes.InvalidArgument, "append must start with its options")
	}
	stream := string(opts.GetStreamIdentifier().GetStreamName())
	if stream == "" {
		return status.Error(codes.InvalidArgument, "append names no stream")
	}
	var ps []proposal
	size := 0
	for {
		m, err := srv.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		pm := m.GetProposedMessage()
		if pm == nil {
			return status.Error(codes.InvalidArgument, "append carries a second options message")
		}
		p, err := v1Proposal(stream, pm)
		if err != nil {
			return err
		}
		size += p.size()
		ps = append(ps, p)
	}
	if size > s.opts.MaxAppendSize {
		return status.Errorf(codes.InvalidArgument, "maximum append size of %d bytes exceeded", s.opts.MaxAppendSize)
	}
	fault := s.takeFault()
	if fault == DropBeforeCommit {
		return s.drop(fault)
	}
	s.log.mu.Lock()
	current := s.log.lastRevisionLocked(stream)
	if !v1Allows(opts, current) {
		s.log.mu.Unlock()
		return srv.SendAndClose(&streamspb.AppendResp{Result: &streamspb.AppendResp_WrongExpectedVersion_{
			WrongExpectedVersion: wrongExpectedVersion(opts, current),
		}})
	}
	var recs []*record
	if len(ps) > 0 {
		recs = s.log.appendLocked(ps)
		current = int64(recs[len(recs)-1].revision)
	}
	s.log.mu.Unlock()
	if fault == DropAfterCommit || fault == StopAfterCommit {
		return s.drop(fault)
	}
	success := &streamspb.AppendResp_Success{}
	if current < 0 {
		success.CurrentRevisionOption = &streamspb.AppendResp_Success_NoStream{NoStream: &shared.Empty{}}
	} else {
		success.CurrentRevisionOption = &streamspb.AppendResp_Success_CurrentRevision{CurrentRevision: uint64(current)}
	}
	if len(recs) > 0 {
		last := recs[len(recs)-1]
		success.PositionOption = &streamspb.AppendResp_Success_Position{Position: &streamspb.AppendResp_Position{
			CommitPosition: last.commit, PreparePosition: last.prepare,
		}}
	} else {
		success.PositionOption = &streamspb.AppendResp_Success_NoPosition{NoPosition: &shared.Empty{}}
	}
	return srv.SendAndClose(&streamspb.AppendResp{Result: &streamspb.AppendResp_Success_{Success: success}})
}

func v1Proposal(stream string, pm *streamspb.AppendReq_ProposedMessage) (proposal, error) {
	id, err := fromUUID(pm.GetId())
	if err != nil {
		return proposal{}, err
	}
	typ, ct := pm.GetMetadata()["type"], pm.GetMetadata()["content-type"]
	if typ == "" || ct == "" {
		return proposal{}, status.Error(codes.InvalidArgument, "an event needs the type and content-type metadata")
	}
	return proposal{
		stream:   stream,
		id:       id,
		metadata: map[string]string{"type": typ, "content-type": ct, "created": ticks(time.Now())},
		custom:   clone(pm.GetCustomMetadata()),
		data:     clone(pm.GetData()),
	}, nil
}

func v1Allows(opts *streamspb.AppendReq_Options, current int64) bool {
	switch e := opts.ExpectedStreamRevision.(type) {
	case *streamspb.AppendReq_Options_Revision:
		return current == int64(e.Revision)
	case *streamspb.AppendReq_Options_NoStream:
		return current < 0
	case *streamspb.AppendReq_Options_StreamExists:
		return current >= 0
	}
	return true // any
}

// wrongExpectedVersion fills both the current fields and the ones servers before
// 20.6.0 used, as KurrentDB does.
func wrongExpectedVersion(opts *streamspb.AppendReq_Options, current int64) *streamspb.AppendResp_WrongExpectedVersion {
	w := &streamspb.AppendResp_WrongExpectedVersion{}
	if current < 0 {
		w.CurrentRevisionOption = &streamspb.AppendResp_WrongExpectedVersion_CurrentNoStream{CurrentNoStream: &shared.Empty{}}
		w.CurrentRevisionOption_20_6_0 = &streamspb.AppendResp_WrongExpectedVersion_NoStream_20_6_0{NoStream_20_6_0: &shared.Empty{}}
	} else {
		w.CurrentRevisionOption = &streamspb.AppendResp_WrongExpectedVersion_CurrentRevision{CurrentRevision: uint64(current)}
		w.CurrentRevisionOption_20_6_0 = &streamspb.AppendResp_WrongExpectedVersion_CurrentRevision_20_6_0{CurrentRevision_20_6_0: uint64(current)}
	}
	switch e := opts.ExpectedStreamRevision.(type) {
	case *streamspb.AppendReq_Options_Revision:
		w.ExpectedRevisionOption = &streamspb.AppendResp_WrongExpectedVersion_ExpectedRevision{ExpectedRevision: e.Revision}
		w.ExpectedRevisionOption_20_6_0 = &streamspb.AppendResp_WrongExpectedVersion_ExpectedRevision_20_6_0{ExpectedRevision_20_6_0: e.Revision}
	case *streamspb.AppendReq_Options_NoStream:
		w.ExpectedRevisionOption = &streamspb.AppendResp_WrongExpectedVersion_ExpectedNoStream{ExpectedNoStream: &shared.Empty{}}
	case *streamspb.AppendReq_Options_StreamExists:
		w.ExpectedRevisionOption = &streamspb.AppendResp_WrongExpectedVersion_ExpectedStreamExists{ExpectedStreamExists: &shared.Empty{}}
		w.ExpectedRevisionOption_20_6_0 = &streamspb.AppendResp_WrongExpectedVersion_StreamExists_20_6_0{StreamExists_20_6_0: &shared.Empty{}}
	default:
		w.ExpectedRevisionOption = &streamspb.AppendResp_WrongExpectedVersion_ExpectedAny{ExpectedAny: &shared.Empty{}}
		w.ExpectedRevisionOption_20_6_0 = &streamspb.AppendResp_WrongExpectedVersion_Any_20_6_0{Any_20_6_0: &shared.Empty{}}
	}
	return w
}

// v2Server serves the v2 streams service: AppendRecords only.
type v2Server struct {
	v2.UnimplementedStreamsServiceServer
	*Server
}

// AppendRecords appends records to any number of streams in one transaction, in
// the order given, if every consistency check holds. Failed checks are all
// reported in one FAILED_PRECONDITION status carrying
// AppendConsistencyViolationErrorDetails, and nothing is written.
func (s *v2Server) AppendRecords(ctx context.Context, req *v2.AppendRecordsRequest) (*v2.AppendRecordsResponse, error) {
	if len(req.GetRecords()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "at least one record is required")
	}
	ps := make([]proposal, len(req.GetRecords()))
	total := 0
	for i, r := range req.GetRecords() {
		p, err := v2Proposal(r)
		if err != nil {
			return nil, err
		}
		if n := p.size(); n > s.opts.MaxRecordSize {
			st, _ := status.New(codes.InvalidArgument, "record size exceeded").WithDetails(&v2errors.AppendRecordSizeExceededErrorDetails{
				Stream: p.stream, RecordId: uuidString(p.id), Size: int32(n), MaxSize: int32(s.opts.MaxRecordSize),
			})
			return nil, st.Err()
		}
		total += p.size()
		ps[i] = p
	}
	if total > s.opts.MaxAppendSize {
		st, _ := status.New(codes.Aborted, "transaction size exceeded").WithDetails(&v2errors.AppendTransactionSizeExceededErrorDetails{
			Size: int32(min(total, 1<<31-1)), MaxSize: int32(s.opts.MaxAppendSize),
		})
		return nil, st.Err()
	}
	for _, c := range req.GetChecks() {
		ss := c.GetStreamState()
		if ss == nil || ss.GetStream() == "" {
			return nil, status.Error(codes.InvalidArgument, "a consistency check names no stream")
		}
		if e := ss.GetExpectedState(); e < 0 && e != stateNoStream && e != stateAny && e != stateExists {
			return nil, status.Errorf(codes.InvalidArgument, "expected state %d is not defined", e)
		}
	}
	fault := s.takeFault()
	if fault == DropBeforeCommit {
		return nil, s.drop(fault)
	}
	s.log.mu.Lock()
	var violations []*v2errors.ConsistencyViolation
	for i, c := range req.GetChecks() {
		ss := c.GetStreamState()
		actual := s.log.lastRevisionLocked(ss.GetStream())
		if !stateHolds(ss.GetExpectedState(), actual) {
			violations = append(violations, &v2errors.ConsistencyViolation{
				CheckIndex: int32(i),
				Type: &v2errors.ConsistencyViolation_StreamState{StreamState: &v2errors.ConsistencyViolation_StreamStateViolation{
					Stream: ss.GetStream(), ExpectedState: ss.GetExpectedState(), ActualState: actual,
				}},
			})
		}
	}
	if len(violations) > 0 {
		s.log.mu.Unlock()
		st, _ := status.New(codes.FailedPrecondition, "append consistency violation").WithDetails(
			&v2errors.AppendConsistencyViolationErrorDetails{Violations: violations})
		return nil, st.Err()
	}
	recs := s.log.appendLocked(ps)
	s.log.mu.Unlock()
	if fault == DropAfterCommit || fault == StopAfterCommit {
		return nil, s.drop(fault)
	}
	resp := &v2.AppendRecordsResponse{Position: int64(recs[len(recs)-1].commit)}
	seen := map[string]int{}
	for _, r := range recs {
		if i, ok := seen[r.stream]; ok {
			resp.Revisions[i].Revision = int64(r.revision)
			continue
		}
		seen[r.stream] = len(resp.Revisions)
		resp.Revisions = append(resp.Revisions, &v2.StreamRevision{Stream: r.stream, Revision: int64(r.revision)})
	}
	return resp, nil
}

func stateHolds(expected, actual int64) bool {
	switch expected {
	case stateAny:
		return true
	case stateNoStream:
		return actual < 0
	case stateExists:
		return actual >= 0
	}
	return actual == expected
}

func v2Proposal(r *v2.AppendRecord) (proposal, error) {
	if r.GetStream() == "" {
		return proposal{}, status.Error(codes.InvalidArgument, "a record names no stream")
	}
	name := r.GetSchema().GetName()
	if name == "" {
		return proposal{}, status.Error(codes.InvalidArgument, "a record has no schema name")
	}
	var id [16]byte
	var err error
	if r.RecordId != nil {
		if id, err = parseUUID(r.GetRecordId()); err != nil {
			return proposal{}, err
		}
	} else {
		id, _ = fromUUID(nil)
	}
	ct, format := "application/octet-stream", "Bytes"
	switch r.GetSchema().GetFormat() {
	case v2.SchemaFormat_SCHEMA_FORMAT_JSON:
		ct, format = "application/json", "Json"
	case v2.SchemaFormat_SCHEMA_FORMAT_PROTOBUF:
		format = "Protobuf"
	case v2.SchemaFormat_SCHEMA_FORMAT_AVRO:
		format = "Avro"
	}
	// Properties come back through the v1 read API as JSON custom metadata,
	// with the schema's name and format added.
	props := map[string]any{"$schema.name": name, "$schema.format": format}
	for k, v := range r.GetProperties() {
		props[k] = v.AsInterface()
	}
	custom, err := json.Marshal(props)
	if err != nil {
		return proposal{}, status.Errorf(codes.InvalidArgument, "record properties: %v", err)
	}
	return proposal{
		stream:   r.GetStream(),
		id:       id,
		metadata: map[string]string{"type": name, "content-type": ct, "created": ticks(time.Now())},
		custom:   custom,
		data:     clone(r.GetData()),
	}, nil
}

func clone(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return append([]byte(nil), b...)
}
