package kurrent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"

	"github.com/caledger/caledger/eventstore"
)

// Options tune a Store. The zero value is the default.
type Options struct {
	// Prefix is prepended to every caledger stream name to form its KurrentDB
	// stream name, and names the commit stream (Prefix + "$commits"). Default
	// "caledger-". Ledgers sharing a cluster need prefixes of which none is a
	// prefix of another.
	Prefix string
	// Logger receives connection events. Default: discarded.
	Logger *slog.Logger
	// AllowInsecure accepts a connection string with tls=false. Default: such a
	// connection string is refused.
	AllowInsecure bool
	// CommitTimeout bounds one commit round trip (default 10s).
	CommitTimeout time.Duration
	// ResolveTimeout bounds how long an append whose commit was cut off keeps
	// trying to learn whether it was written before it fails with
	// eventstore.ErrFailed (default 30s).
	ResolveTimeout time.Duration
	// RetryTimeout bounds how long ReadStream, ReadAll, Head and the version
	// lookups of Append keep retrying through connection loss (default 30s).
	// Follow retries until its context ends.
	RetryTimeout time.Duration
	// MinBackoff and MaxBackoff bound the waits between reconnection attempts
	// and retries (defaults 50ms and 5s).
	MinBackoff, MaxBackoff time.Duration
}

func (o *Options) setDefaults() {
	if o.Prefix == "" {
		o.Prefix = "caledger-"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.CommitTimeout <= 0 {
		o.CommitTimeout = 10 * time.Second
	}
	if o.ResolveTimeout <= 0 {
		o.ResolveTimeout = 30 * time.Second
	}
	if o.RetryTimeout <= 0 {
		o.RetryTimeout = 30 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 50 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(5*time.Second, o.MinBackoff)
	}
}

// Store is the KurrentDB implementation of eventstore.Store. It is safe for
// concurrent use.
type Store struct {
	opts Options
	log  *slog.Logger
	naming
	conn     *connector
	versions versionCache

	reqs       chan *request
	failed     atomic.Pointer[error]
	closed     chan struct{}
	closeOnce  sync.Once
	writerDone chan struct{}
	// ctx ends when the store is closed; reads and subscriptions run under it.
	ctx    context.Context
	cancel context.CancelFunc
}

var _ eventstore.Store = (*Store)(nil)

// Open connects to the KurrentDB cluster that connString names (the client's
// kurrentdb:// format: credentials, TLS settings and hosts), checks that it is
// KurrentDB 26.1 or later and that the credentials can read the ledger, and
// returns the store. A malformed connection string, an unknown setting, an
// unreachable or too old cluster and rejected credentials are errors here, not
// at the first append. The maxDiscoverAttempts setting is ignored: the store
// retries with its own backoff.
func Open(ctx context.Context, connString string, opts Options) (*Store, error) {
	opts.setDefaults()
	if err := checkPrefix(opts.Prefix); err != nil {
		return nil, err
	}
	cfg, err := parseConnectionString(connString, opts.AllowInsecure, opts.Logger)
	if err != nil {
		return nil, err
	}
	s := &Store{opts: opts, log: opts.Logger, naming: newNaming(opts.Prefix),
		reqs: make(chan *request, 4096), closed: make(chan struct{}), writerDone: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.conn = newConnector(cfg, opts, s.closed)
	fail := func(err error) (*Store, error) {
		close(s.closed)
		s.cancel()
		s.conn.close()
		return nil, err
	}
	if err := s.conn.connect(ctx); err != nil {
		return fail(fmt.Errorf("kurrent: connect: %w", err))
	}
	// Reading the commit stream proves the credentials work and gives the
	// writer its starting point.
	last, found, err := s.headCommit(ctx)
	if err != nil {
		return fail(fmt.Errorf("kurrent: read the commit stream %q: %w", s.commits, err))
	}
	w := &writer{s: s, maxBytes: maxBatchBytes}
	w.setHead(last, found)
	go w.loop()
	return s, nil
}

// Head implements eventstore.Store. It reads the cluster, so it sees appends
// made through other stores.
func (s *Store) Head(ctx context.Context) (uint64, error) {
	if err := s.usable(ctx); err != nil {
		return 0, err
	}
	c, _, err := s.headCommit(ctx)
	return c.last, err
}

// headCommit reads the last commit record, retrying within RetryTimeout; the
// zero commit (found false) for an empty ledger.
func (s *Store) headCommit(ctx context.Context) (commit, bool, error) {
	var c commit
	var found bool
	err := s.retry(ctx, s.opts.RetryTimeout, func(ctx context.Context) error {
		var err error
		c, found, err = s.lastCommit(ctx)
		return err
	})
	return c, found, s.iterErr(ctx, err)
}

// Close implements eventstore.Store.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.cancel()
		<-s.writerDone
		s.conn.close()
	})
	return nil
}

func (s *Store) usable(ctx context.Context) error {
	select {
	case <-s.closed:
		return eventstore.ErrClosed
	default:
	}
	return ctx.Err()
}

// iterErr turns the error of an operation that may have been cut short by the
// store closing or ctx ending into the error the contract names.
func (s *Store) iterErr(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	select {
	case <-s.closed:
		return eventstore.ErrClosed
	default:
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// retry runs op until it returns nil or an error other than a connection error,
// ctx ends, the store closes, or budget (when positive) has passed. Between
// attempts it backs off.
func (s *Store) retry(ctx context.Context, budget time.Duration, op func(context.Context) error) error {
	bctx, cancel := ctx, context.CancelFunc(func() {})
	if budget > 0 {
		bctx, cancel = context.WithTimeout(ctx, budget)
	}
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	b := backoff{min: s.opts.MinBackoff, max: s.opts.MaxBackoff}
	for {
		err := op(bctx)
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil || s.ctx.Err() != nil:
			return s.iterErr(ctx, err)
		case bctx.Err() != nil:
			return fmt.Errorf("kurrent: gave up after %v: %w", budget, err)
		case !isConnErr(err):
			return err
		}
		select {
		case <-time.After(b.next()):
		case <-bctx.Done():
		}
	}
}

// lastCommit reads the last commit record.
func (s *Store) lastCommit(ctx context.Context) (commit, bool, error) {
	return s.readCommit(ctx, kurrentdb.ReadStreamOptions{Direction: kurrentdb.Backwards, From: kurrentdb.End{}})
}

// commitAt reads the commit record at a revision of the commit stream.
func (s *Store) commitAt(ctx context.Context, revision uint64) (commit, bool, error) {
	return s.readCommit(ctx, kurrentdb.ReadStreamOptions{From: kurrentdb.Revision(revision)})
}

func (s *Store) readCommit(ctx context.Context, opts kurrentdb.ReadStreamOptions) (commit, bool, error) {
	var rec *kurrentdb.RecordedEvent
	err := s.conn.call(ctx, func(ctx context.Context, c *kurrentdb.Client) error {
		var err error
		rec, err = readOne(ctx, c, s.commits, opts)
		return err
	})
	if err != nil || rec == nil {
		return commit{}, false, err
	}
	cm, err := readCommit(rec)
	if err != nil {
		return commit{}, false, &eventstore.CorruptError{Err: fmt.Errorf("commit stream revision %d: %w", rec.EventNumber, err)}
	}
	return cm, true, nil
}

// streamVersion reads a stream's current version (0: no events).
func (s *Store) streamVersion(ctx context.Context, stream string) (uint64, error) {
	var v uint64
	err := s.retry(ctx, s.opts.RetryTimeout, func(ctx context.Context) error {
		return s.conn.call(ctx, func(ctx context.Context, c *kurrentdb.Client) error {
			rec, err := readOne(ctx, c, s.stream(stream), kurrentdb.ReadStreamOptions{Direction: kurrentdb.Backwards, From: kurrentdb.End{}})
			if rec != nil {
				v = rec.EventNumber + 1
			}
			return err
		})
	})
	return v, s.iterErr(ctx, err)
}

// readOne reads one event of a stream; a missing stream or position gives nil.
func readOne(ctx context.Context, c *kurrentdb.Client, stream string, opts kurrentdb.ReadStreamOptions) (*kurrentdb.RecordedEvent, error) {
	rs, err := c.ReadStream(ctx, stream, opts, 1)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	e, err := rs.Recv()
	switch {
	case errors.Is(err, io.EOF) || isNotFound(err):
		return nil, nil
	case err != nil:
		return nil, err
	}
	return e.Event, nil
}

func isNotFound(err error) bool {
	var ke *kurrentdb.Error
	return errors.As(err, &ke) && ke.Code() == kurrentdb.ErrorCodeResourceNotFound
}

// versionCache remembers stream versions this store saw last, as first guesses
// for appends that expect Any or StreamExists (the version must be written into
// the events before the append). A stale guess costs one conflict and a retry.
type versionCache struct {
	mu sync.Mutex
	m  map[string]uint64
}

const maxCachedVersions = 1 << 16

func (c *versionCache) get(stream string) (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[stream]
	return v, ok
}

func (c *versionCache) set(stream string, v uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedVersions {
		c.m = map[string]uint64{}
	}
	c.m[stream] = v
}
