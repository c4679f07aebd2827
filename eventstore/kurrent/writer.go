package kurrent

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore"
)

// Request states. Whoever moves a request out of queued or taken decides its
// fate: the writer (to inflight) or its caller (to abandoned).
const (
	queued    int32 = iota // waiting in Store.reqs
	taken                  // in the writer's pending list; nothing of it is written
	inflight               // in a commit, or being answered by the writer
	abandoned              // its caller gave up while nothing was written
)

// A request is one Append.
type request struct {
	ctx      context.Context
	stream   string
	expected domain.Expected
	encoded  [][]byte // canonical encodings; positions and versions are set per attempt
	ids      []domain.EventID
	types    []string
	versions []uint64 // versions the caller set in the events (0: none)
	size     int

	// current is the version the stream must be at: fixed by the expected
	// version or the events' versions when pinned, otherwise a guess that a
	// conflict corrects.
	current uint64
	pinned  bool
	vpin    int64 // the stream version the events' versions imply, or -1
	// mismatched: an event's version contradicts the others' (wrongVersion
	// finds which).
	mismatched bool

	first uint64 // position of the first event in the commit being tried
	state atomic.Int32
	done  chan result
}

type result struct {
	appended domain.Appended
	err      error
}

func (r *request) reply(a domain.Appended, err error) { r.done <- result{a, err} }

// Limits of one commit. A lone request larger than maxBatchBytes is committed
// alone; KurrentDB's MaxAppendSize then decides.
const (
	maxBatchRequests = 512
	maxBatchEvents   = 4096
	maxBatchBytes    = 4 << 20
	minBatchBytes    = 64 << 10
)

// Append implements eventstore.Store.
func (s *Store) Append(ctx context.Context, stream string, expected domain.Expected, events ...domain.Event) (domain.Appended, error) {
	if err := s.usable(ctx); err != nil {
		return domain.Appended{}, err
	}
	if p := s.failed.Load(); p != nil {
		return domain.Appended{}, fmt.Errorf("%w: %v", eventstore.ErrFailed, *p)
	}
	r, err := newRequest(ctx, stream, expected, events)
	if err != nil {
		return domain.Appended{}, err
	}
	if err := s.expect(ctx, r); err != nil {
		return domain.Appended{}, err
	}
	select {
	case s.reqs <- r:
	case <-ctx.Done():
		return domain.Appended{}, ctx.Err()
	case <-s.closed:
		return domain.Appended{}, eventstore.ErrClosed
	}
	select {
	case res := <-r.done:
		return res.appended, res.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(queued, abandoned) || r.state.CompareAndSwap(taken, abandoned) {
			return domain.Appended{}, ctx.Err()
		}
	case <-s.writerDone:
		if r.state.CompareAndSwap(queued, abandoned) || r.state.CompareAndSwap(taken, abandoned) {
			return domain.Appended{}, eventstore.ErrClosed
		}
	}
	// The request is in a commit: its outcome decides.
	res := <-r.done
	return res.appended, res.err
}

func newRequest(ctx context.Context, stream string, expected domain.Expected, events []domain.Event) (*request, error) {
	enc, size, err := eventstore.EncodeAppend(stream, expected, events)
	if err != nil {
		return nil, err
	}
	n := len(enc)
	r := &request{ctx: ctx, stream: stream, expected: expected, encoded: make([][]byte, n), ids: make([]domain.EventID, n),
		types: make([]string, n), versions: make([]uint64, n), size: size, vpin: -1, done: make(chan result, 1)}
	for i, e := range enc {
		r.encoded[i], r.ids[i], r.types[i], r.versions[i] = e.Bytes, e.ID, e.Type, e.Version
		// Event i made for version v needs the stream at v-1-i before the append.
		if v := e.Version; v != 0 {
			c := int64(v) - 1 - int64(i)
			switch {
			case c < 0 || r.vpin >= 0 && c != r.vpin:
				r.mismatched = true
			case r.vpin < 0:
				r.vpin = c
			}
		}
	}
	return r, nil
}

// expect settles the version the stream must be at. KurrentDB checks it, but
// the versions are part of the canonical bytes, so they must be known before
// the append: NoStream and Exact fix it, as do versions the caller set in the
// events; for Any and StreamExists the store guesses (its cache, or a read) and
// a conflict corrects the guess.
func (s *Store) expect(ctx context.Context, r *request) error {
	conflict := r.mismatched
	switch {
	case conflict:
	case r.expected >= 0:
		r.current, r.pinned = uint64(r.expected), true
		conflict = r.vpin >= 0 && uint64(r.vpin) != r.current
	case r.vpin >= 0:
		r.current, r.pinned = uint64(r.vpin), true
		conflict = r.expected == domain.StreamExists && r.current == 0
	default:
		if v, ok := s.versions.get(r.stream); ok && (v > 0 || r.expected == domain.Any) {
			r.current = v
			return nil
		}
		v, err := s.streamVersion(ctx, r.stream)
		if err != nil {
			return err
		}
		if r.expected == domain.StreamExists && v == 0 {
			return r.wrongVersion(0)
		}
		r.current = v
		return nil
	}
	if !conflict {
		return nil
	}
	// No stream version satisfies both; report the one the stream has.
	v, err := s.streamVersion(ctx, r.stream)
	if err != nil {
		return err
	}
	return r.wrongVersion(v)
}

func (r *request) wrongVersion(actual uint64) error {
	err := &domain.WrongVersionError{Stream: r.stream, Expected: r.expected, Actual: actual}
	// As in the embedded store: the expected version is checked first, then
	// the versions the events were made for.
	if r.expected.Allows(actual) {
		if mismatch := eventstore.VersionMismatch(r.versions, r.stream, r.expected, actual); mismatch != nil {
			return mismatch
		}
	}
	return err
}

// writer is the single goroutine that commits appends. Every commit is one
// AppendRecords call: the commit record first, then the events of up to
// maxBatchRequests appends (one per stream), with one consistency check on the
// commit stream and one per stream.
type writer struct {
	s       *Store
	pending []*request

	known    bool   // rev and head are the cluster's, as far as this store knows
	rev      int64  // commit stream revision of the last commit record (-1: none)
	head     uint64 // last position
	maxBytes int
	wait     backoff
}

func (w *writer) setHead(c commit, found bool) {
	w.known, w.rev, w.head = true, -1, 0
	if found {
		w.rev, w.head = int64(c.revision), c.last
	}
}

func (w *writer) commitsState() kurrentdb.StreamState {
	if w.rev < 0 {
		return kurrentdb.NoStream{}
	}
	return kurrentdb.StreamRevision{Value: uint64(w.rev)}
}

func (w *writer) loop() {
	s := w.s
	defer close(s.writerDone)
	w.wait = backoff{min: s.opts.MinBackoff, max: s.opts.MaxBackoff}
	for {
		if len(w.pending) == 0 {
			select {
			case <-s.closed:
				w.shutdown()
				return
			case r := <-s.reqs:
				w.take(r)
			}
		}
	gather:
		for len(w.pending) < 4*maxBatchRequests {
			select {
			case r := <-s.reqs:
				w.take(r)
			default:
				break gather
			}
		}
		select {
		case <-s.closed:
			w.shutdown()
			return
		default:
		}
		if w.round() {
			w.wait.reset()
			continue
		}
		// The cluster is unreachable: wait before trying again.
		select {
		case <-time.After(w.wait.next()):
		case <-s.closed:
		}
	}
}

func (w *writer) take(r *request) {
	if r.state.CompareAndSwap(queued, taken) {
		w.pending = append(w.pending, r)
	}
}

// claim moves a pending request to inflight; false means its caller left.
func claim(r *request) bool { return r.state.CompareAndSwap(taken, inflight) }

// round commits one batch of pending requests. It returns false when the
// cluster could not be reached, so the loop backs off.
func (w *writer) round() bool {
	s := w.s
	w.expire()
	if p := s.failed.Load(); p != nil {
		w.answerPending(fmt.Errorf("%w: %v", eventstore.ErrFailed, *p))
		return true
	}
	if len(w.pending) == 0 {
		return true
	}
	if !w.known {
		ctx, cancel := context.WithTimeout(s.ctx, s.opts.CommitTimeout)
		c, found, err := s.lastCommit(ctx)
		cancel()
		if err != nil {
			if isConnErr(err) || s.ctx.Err() != nil {
				return false
			}
			w.answerPending(fmt.Errorf("kurrent: read the commit stream: %w", err))
			return true
		}
		w.setHead(c, found)
	}
	batch := w.pick()
	if len(batch) == 0 {
		return true
	}
	return w.commit(batch)
}

// expire answers the pending requests whose context ended: nothing of them is
// written, so their callers may hear so.
func (w *writer) expire() {
	kept := w.pending[:0]
	for _, r := range w.pending {
		switch {
		case r.state.Load() == abandoned:
		case r.ctx.Err() != nil:
			if claim(r) {
				r.reply(domain.Appended{}, r.ctx.Err())
			}
		default:
			kept = append(kept, r)
		}
	}
	clear(w.pending[len(kept):])
	w.pending = kept
}

func (w *writer) answerPending(err error) {
	for _, r := range w.pending {
		if claim(r) {
			r.reply(domain.Appended{}, err)
		}
	}
	w.pending = nil
}

func (w *writer) shutdown() {
	w.answerPending(eventstore.ErrClosed)
	for {
		select {
		case r := <-w.s.reqs:
			if r.state.CompareAndSwap(queued, inflight) {
				r.reply(domain.Appended{}, eventstore.ErrClosed)
			}
		default:
			return
		}
	}
}

// An entry is a request's place in a commit.
type entry struct {
	r *request
	// check: the first request of its stream in the commit carries the
	// stream's consistency check. Later ones are checked here, against the
	// version the earlier ones leave.
	check bool
	// reject: the request's fixed version is not the one it would find; if the
	// commit succeeds, the stream passes through version at and the request
	// fails with that. It writes nothing either way.
	reject bool
	at     uint64
}

// pick takes the next batch from the pending requests, in order, within the
// batch limits.
func (w *writer) pick() []entry {
	var batch []entry
	var rest []*request
	running := map[string]uint64{} // stream versions after the entries so far
	events, size := 0, 0
	for _, r := range w.pending {
		e := entry{r: r}
		v, seen := running[r.stream]
		switch {
		case !seen:
			e.check = true
		case r.pinned && r.current != v:
			e.reject, e.at = true, v
		case !r.pinned:
			r.current = v
		}
		fits := len(batch) < maxBatchRequests && events+len(r.encoded) <= maxBatchEvents && size+r.size <= w.maxBytes
		if !e.reject && len(batch) > 0 && !fits {
			rest = append(rest, r)
			continue
		}
		if !claim(r) {
			continue
		}
		if !e.reject {
			running[r.stream] = r.current + uint64(len(r.encoded))
			events += len(r.encoded)
			size += r.size
		}
		batch = append(batch, e)
	}
	w.pending = rest
	return batch
}

// learned applies stream versions observed while the pending requests were
// under way: a fixed version that differs fails now; a guess is corrected.
func (w *writer) learned(versions map[string]uint64) {
	if len(versions) == 0 {
		return
	}
	for stream, v := range versions {
		w.s.versions.set(stream, v)
	}
	kept := w.pending[:0]
	for _, r := range w.pending {
		if v, ok := versions[r.stream]; ok && r.state.Load() == taken {
			if r.pinned && r.current != v || !r.pinned && r.expected == domain.StreamExists && v == 0 {
				if claim(r) {
					r.reply(domain.Appended{}, r.wrongVersion(v))
				}
				continue
			}
			if !r.pinned {
				r.current = v
			}
		}
		kept = append(kept, r)
	}
	clear(w.pending[len(kept):])
	w.pending = kept
}

func requests(batch []entry) []*request {
	rs := make([]*request, len(batch))
	for i, e := range batch {
		rs[i] = e.r
	}
	return rs
}

// requeue puts requests of a commit that wrote nothing back in front of the
// pending list.
func (w *writer) requeue(rs []*request) {
	var back []*request
	for _, r := range rs {
		if err := r.ctx.Err(); err != nil {
			r.reply(domain.Appended{}, err)
			continue
		}
		r.state.Store(taken)
		back = append(back, r)
	}
	w.pending = append(back, w.pending...)
}

// commit tries one batch. It returns false when the cluster could not be
// reached.
func (w *writer) commit(batch []entry) bool {
	s := w.s
	c := commitRecord{first: w.head + 1}
	n := 1
	for _, e := range batch {
		n += len(e.r.encoded)
	}
	records := make([]kurrentdb.AppendRecord, 1, n)
	checks := make([]kurrentdb.ConsistencyCheck, 1, 1+len(batch))
	pos := c.first
	for _, e := range batch {
		if e.reject {
			continue
		}
		r := e.r
		r.first = pos
		name := s.stream(r.stream)
		for i, b := range r.encoded {
			domain.SetPlacement(b, pos, r.current+uint64(i)+1)
			records = append(records, kurrentdb.AppendRecord{Stream: name, Record: eventData(r.ids[i], r.types[i], b)})
			pos++
		}
		if e.check {
			checks = append(checks, kurrentdb.StreamStateCheck{Stream: name, ExpectedState: stateFor(r.current)})
		}
	}
	c.last = pos - 1
	if c.last < c.first {
		// Only rejections, which depend on a commit that is not in this batch.
		w.requeue(requests(batch))
		return true
	}
	c.nonce = newID()
	records[0] = kurrentdb.AppendRecord{Stream: s.commits, Record: eventData(c.nonce, commitType, c.encode())}
	checks[0] = kurrentdb.StreamStateCheck{Stream: s.commits, ExpectedState: w.commitsState()}

	err := w.appendRecords(records, checks)
	if err == nil {
		w.rev++
		w.head = c.last
		w.succeed(batch)
		return true
	}
	return w.failed(batch, c, err)
}

func (w *writer) appendRecords(records []kurrentdb.AppendRecord, checks []kurrentdb.ConsistencyCheck) error {
	s := w.s
	// Not under s.ctx: a commit under way when the store closes finishes.
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.CommitTimeout)
	defer cancel()
	return s.conn.call(ctx, func(ctx context.Context, c *kurrentdb.Client) error {
		_, err := c.AppendRecords(ctx, records, checks...)
		return err
	})
}

func (w *writer) succeed(batch []entry) {
	final := map[string]uint64{}
	for _, e := range batch {
		r := e.r
		if e.reject {
			r.reply(domain.Appended{}, r.wrongVersion(e.at))
			continue
		}
		n := uint64(len(r.encoded))
		v := r.current + n
		final[r.stream] = v
		r.reply(domain.Appended{FirstPosition: r.first, LastPosition: r.first + n - 1, Version: v}, nil)
	}
	w.learned(final)
}

func replyAll(batch []entry, err error) {
	for _, e := range batch {
		e.r.reply(domain.Appended{}, err)
	}
}

// failed handles a commit that did not succeed. It returns false when the
// cluster could not be reached.
func (w *writer) failed(batch []entry, c commitRecord, err error) bool {
	s := w.s
	var code kurrentdb.ErrorCode = -1
	var ke *kurrentdb.Error
	if errors.As(err, &ke) {
		code = ke.Code()
	}
	switch {
	case errors.Is(err, eventstore.ErrClosed):
		replyAll(batch, eventstore.ErrClosed) // the connector refused before sending
		return true
	case errors.Is(err, errNotConnected):
		w.requeue(requests(batch)) // never sent
		return false
	case code == kurrentdb.ErrorCodeNotLeader:
		// A follower refused it (the store asks for the leader); the client
		// has moved to the leader.
		w.requeue(requests(batch))
		return false
	case code == kurrentdb.ErrorCodeAppendConsistencyViolation:
		var v *kurrentdb.AppendConsistencyViolationError
		errors.As(err, &v)
		w.violated(batch, v)
		return true
	case code == kurrentdb.ErrorCodeStreamTombstoned || code == kurrentdb.ErrorCodeStreamDeleted:
		var te *kurrentdb.StreamTombstoneError
		stream := ""
		if errors.As(err, &te) {
			stream = te.Stream
		}
		w.answerOne(batch, func(r *request) bool { return s.stream(r.stream) == stream },
			fmt.Errorf("kurrent: append: the KurrentDB stream is deleted: %w", err))
		return true
	case code == kurrentdb.ErrorCodeAppendRecordSizeExceeded:
		var re *kurrentdb.AppendRecordSizeExceededError
		id := ""
		if errors.As(err, &re) {
			id = re.RecordId
		}
		w.answerOne(batch, func(r *request) bool {
			for _, e := range r.ids {
				if e.String() == id {
					return true
				}
			}
			return false
		}, fmt.Errorf("%w: KurrentDB refused an event: %v", eventstore.ErrTooLarge, err))
		return true
	case code == kurrentdb.ErrorCodeAppendTransactionSizeExceeded:
		if len(batch) == 1 {
			replyAll(batch, fmt.Errorf("%w: KurrentDB refused the append: %v", eventstore.ErrTooLarge, err))
			return true
		}
		w.maxBytes = max(w.maxBytes/2, minBatchBytes)
		s.log.Warn("kurrent: the cluster refused a commit as too large; committing smaller batches", "max_batch_bytes", w.maxBytes)
		w.requeue(requests(batch))
		return true
	case refused(err):
		replyAll(batch, fmt.Errorf("kurrent: append: %w", err))
		return true
	}
	// The commit may or may not have been written.
	w.known = false
	for _, e := range batch {
		// A call abandoned on its deadline may still be reading the buffers.
		for i, b := range e.r.encoded {
			e.r.encoded[i] = append([]byte(nil), b...)
		}
	}
	committed, rerr := w.resolve(c)
	switch {
	case rerr != nil:
		s.fail(fmt.Errorf("commit at positions %d..%d: %v; learning its outcome: %w", c.first, c.last, err, rerr))
		replyAll(batch, fmt.Errorf("%w: the outcome of the append is unknown: %v", eventstore.ErrFailed, err))
		return true
	case committed:
		s.log.Info("kurrent: a commit that was cut off had been written", "positions", fmt.Sprintf("%d..%d", c.first, c.last))
		w.succeed(batch)
		return true
	case isConnErr(err) || errors.Is(err, context.DeadlineExceeded):
		s.log.Warn("kurrent: a commit was cut off and not written; retrying", "err", err)
		w.requeue(requests(batch))
		return false
	}
	replyAll(batch, fmt.Errorf("kurrent: append: %w", err))
	return true
}

// answerOne answers the request match picks with err and requeues the others;
// when none matches, all are answered.
func (w *writer) answerOne(batch []entry, match func(*request) bool, err error) {
	var rest []*request
	found := false
	for _, e := range batch {
		if !found && !e.reject && match(e.r) {
			found = true
			e.r.reply(domain.Appended{}, err)
			continue
		}
		rest = append(rest, e.r)
	}
	if !found {
		replyAll(batch, err)
		return
	}
	w.requeue(rest)
}

// violated handles failed consistency checks. Nothing was written. A request
// whose version was fixed learns the stream's actual version; a guess is
// corrected and retried; a changed commit stream (another store appended)
// makes the writer read it again.
func (w *writer) violated(batch []entry, v *kurrentdb.AppendConsistencyViolationError) {
	s := w.s
	checked := make(map[string]*request, len(batch))
	for _, e := range batch {
		if e.check {
			checked[s.stream(e.r.stream)] = e.r
		}
	}
	answered := map[*request]bool{}
	actual := map[string]uint64{}
	if v == nil {
		w.known = false
	} else {
		for _, cv := range v.Violations {
			if cv.Stream == s.commits {
				w.known = false
				continue
			}
			r := checked[cv.Stream]
			if r == nil || answered[r] {
				continue
			}
			a, ok := versionOf(cv.ActualState)
			if !ok {
				answered[r] = true
				r.reply(domain.Appended{}, fmt.Errorf("kurrent: append: KurrentDB stream %q is deleted (state %v)", cv.Stream, cv.ActualState))
				continue
			}
			actual[r.stream] = a
		}
	}
	var rest []*request
	for _, e := range batch {
		if !answered[e.r] {
			rest = append(rest, e.r)
		}
	}
	w.requeue(rest)
	w.learned(actual)
}

// resolve learns whether a commit whose reply was lost was written. Its commit
// record expected the commit stream at w.rev, so it can only be at revision
// w.rev+1. If that revision holds it (the same nonce), it was written. If it
// holds another record, it was not and never will be. If it is still free,
// resolve writes an empty commit record (a fence: no positions) there, after
// which the lost attempt can no longer succeed, and reads again.
func (w *writer) resolve(c commitRecord) (bool, error) {
	s := w.s
	rev := uint64(w.rev + 1)
	state := w.commitsState()
	fence := commitRecord{first: c.first, last: c.first - 1, nonce: newID()}
	deadline := time.Now().Add(s.opts.ResolveTimeout)
	b := backoff{min: s.opts.MinBackoff, max: s.opts.MaxBackoff}
	var lastErr error
	for {
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return false, fmt.Errorf("gave up after %v: %w", s.opts.ResolveTimeout, lastErr)
		}
		ctx, cancel := context.WithTimeout(context.Background(), min(remaining, s.opts.CommitTimeout))
		stop := context.AfterFunc(s.ctx, cancel) // closing the store stops waiting
		got, found, err := s.commitAt(ctx, rev)
		if err == nil && found {
			stop()
			cancel()
			return got.nonce == c.nonce, nil
		}
		if err == nil {
			err = s.conn.call(ctx, func(ctx context.Context, cl *kurrentdb.Client) error {
				_, err := cl.AppendRecords(ctx, []kurrentdb.AppendRecord{{Stream: s.commits, Record: eventData(fence.nonce, commitType, fence.encode())}},
					kurrentdb.StreamStateCheck{Stream: s.commits, ExpectedState: state})
				return err
			})
			var ke *kurrentdb.Error
			switch {
			case err == nil:
				stop()
				cancel()
				s.log.Info("kurrent: fenced a commit that was cut off", "revision", rev)
				return false, nil
			case errors.As(err, &ke) && ke.Code() == kurrentdb.ErrorCodeAppendConsistencyViolation:
				stop()
				cancel()
				continue // the revision is taken now: read it
			}
		}
		stop()
		cancel()
		lastErr = err
		if s.ctx.Err() != nil {
			return false, fmt.Errorf("store closed: %w", err)
		}
		select {
		case <-time.After(b.next()):
		case <-s.ctx.Done():
		}
	}
}

// refused reports errors with which KurrentDB refused a request without writing
// anything.
func refused(err error) bool {
	var ke *kurrentdb.Error
	if errors.As(err, &ke) {
		switch ke.Code() {
		case kurrentdb.ErrorCodeUnauthenticated, kurrentdb.ErrorCodeAccessDenied, kurrentdb.ErrorCodeUnsupportedFeature,
			kurrentdb.ErrorCodeResourceNotFound, kurrentdb.ErrorCodeResourceAlreadyExists, kurrentdb.ErrorCodeParsing:
			return true
		}
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated, codes.Unimplemented,
		codes.FailedPrecondition, codes.OutOfRange, codes.NotFound, codes.AlreadyExists:
		return true
	}
	return false
}

// fail puts the store in the failed state: an append's outcome is unknown, so
// no further append is accepted until the store is reopened.
func (s *Store) fail(err error) {
	s.failed.CompareAndSwap(nil, &err)
	s.log.Error("kurrent: event store failed; appends are refused until it is reopened", "err", err)
}
