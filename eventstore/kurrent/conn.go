package kurrent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/caledger/caledger/eventstore"
)

// settings are the connection string settings KurrentDB-Client-Go v1.4.0 reads,
// lower-cased. The client only logs a warning for any other, so a misspelt
// tlsCAFile would silently fall back to the system roots; Open refuses it.
var settings = map[string]bool{
	"discoveryinterval": true, "gossiptimeout": true, "maxdiscoverattempts": true,
	"nodepreference": true, "keepaliveinterval": true, "keepalivetimeout": true,
	"tls": true, "tlscafile": true, "usercertfile": true, "userkeyfile": true,
	"tlsverifycert": true, "defaultdeadline": true,
}

// parseConnectionString checks s and returns the client configuration. Its
// errors never quote s, which may hold a password.
func parseConnectionString(s string, allowInsecure bool, log *slog.Logger) (*kurrentdb.Configuration, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("kurrent: the connection string is empty")
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return nil, errors.New(`kurrent: malformed connection string: want "kurrentdb://[user:password@]host[:port][,host...][?setting=value...]"`)
	}
	if _, query, ok := strings.Cut(rest, "?"); ok {
		values, err := url.ParseQuery(query)
		if err != nil {
			// The parser's message quotes the bad escape, which may come from
			// a password: not repeated.
			return nil, errMalformed
		}
		for k, v := range values {
			if strings.ContainsAny(k, "@:/") {
				// A "?" inside the user name or password split it here: what
				// follows it is not a setting but a piece of the password.
				return nil, errMalformed
			}
			if !settings[strings.ToLower(k)] {
				return nil, fmt.Errorf("kurrent: unknown connection string setting %q", k)
			}
			if strings.EqualFold(k, "defaultDeadline") {
				// The client ignores a malformed deadline instead of reporting it.
				if n, err := strconv.Atoi(v[0]); err != nil || n < 1 {
					return nil, fmt.Errorf("kurrent: connection string setting defaultDeadline must be a positive number of milliseconds")
				}
			}
		}
	}
	cfg, err := kurrentdb.ParseConnectionString(s)
	if err != nil {
		if scheme != "kurrentdb" && scheme != "kurrentdb+discover" && scheme != "esdb" && scheme != "esdb+discover" {
			return nil, fmt.Errorf("kurrent: malformed connection string: unknown scheme %q (want kurrentdb or kurrentdb+discover)", scheme)
		}
		// The client's messages quote pieces of the string ("invalid port
		// ':se'"). Without the user name and password they are safe to show;
		// if the string parses without them, the fault is in them, and
		// nothing of them is repeated.
		redacted := withoutUserinfo(scheme, rest)
		if redacted == s {
			return nil, fmt.Errorf("kurrent: malformed connection string: %v", unquoted(err))
		}
		if _, rerr := kurrentdb.ParseConnectionString(redacted); rerr != nil {
			return nil, fmt.Errorf("kurrent: malformed connection string: %v", unquoted(rerr))
		}
		return nil, errMalformed
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kurrent: connection string: %v", err)
	}
	if cfg.DisableTLS && !allowInsecure {
		return nil, errors.New("kurrent: the connection string disables TLS (tls=false); the ledger is only reached over TLS unless Options.AllowInsecure is set")
	}
	if cfg.DisableTLS && (cfg.Username != "" || cfg.Password != "") {
		// The client silently drops credentials on plaintext connections.
		return nil, errors.New("kurrent: the connection string has credentials but disables TLS; they would not be sent")
	}
	if cfg.SkipCertificateVerification {
		log.Warn("kurrent: tlsVerifyCert=false: the cluster's certificate is not verified")
	}
	cfg.Logger = clientLogger(log)
	// The store reconnects with its own backoff (connector.redial); one
	// discovery attempt per client keeps a dead node from blocking it for long.
	cfg.MaxDiscoverAttempts = 1
	return cfg, nil
}

// withoutUserinfo is the connection string scheme://rest without what comes
// before its last "@": the user name and password.
func withoutUserinfo(scheme, rest string) string {
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest = rest[i+1:]
	}
	return scheme + "://" + rest
}

// unquoted strips the URL a *url.Error repeats.
func unquoted(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// errMalformed is the error of a connection string the parsers refuse. It says
// nothing more on purpose: their own messages quote pieces of the string.
var errMalformed = errors.New(`kurrent: malformed connection string: want "kurrentdb://[user:password@]host[:port][,host...][?setting=value...]", with reserved characters (?/#@:%) in the user name and password percent-encoded`)

// clientLogger routes the client's own logs to log at debug level: the client
// logs every cancelled call as an error, and nothing it logs is actionable
// beyond the errors the store returns.
func clientLogger(log *slog.Logger) kurrentdb.LoggingFunc {
	return func(level kurrentdb.LogLevel, format string, args ...any) {
		if log.Enabled(context.Background(), slog.LevelDebug) {
			log.Debug("kurrentdb client", "level", level, "msg", fmt.Sprintf(format, args...))
		}
	}
}

// isConnErr reports whether err means the connection (not the request) failed,
// so that the request may be retried, on a new client if need be: the node is
// unreachable, is not the leader (the client then reconnects to the leader it
// names, closing the old connection under any other call), or the connection
// closed under the call. A caller checks its own context first.
func isConnErr(err error) bool {
	if retires(err) || errors.Is(err, errNotConnected) {
		return true
	}
	var ke *kurrentdb.Error
	if errors.As(err, &ke) && ke.Code() == kurrentdb.ErrorCodeNotLeader {
		return true
	}
	return status.Code(err) == codes.Canceled
}

// retires reports whether err condemns the client: it lost its node. (After
// "not leader" the client has already moved to the leader, so that keeps it.)
func retires(err error) bool {
	var ke *kurrentdb.Error
	if errors.As(err, &ke) {
		switch ke.Code() {
		case kurrentdb.ErrorUnavailable, kurrentdb.ErrorCodeConnectionClosed, kurrentdb.ErrorCodeDeadlineExceeded:
			return true
		case kurrentdb.ErrorCodeNotLeader:
			return false
		}
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

var errNotConnected = errors.New("not connected to KurrentDB")

// # Connections
//
// KurrentDB-Client-Go v1.4.0 keeps one connection per Client in a state machine
// goroutine that callers reach through an unbuffered channel. After an
// "unavailable" error it rediscovers the node on the next call; if discovery
// fails, the state machine exits for good, and any goroutine still sending to it
// blocks forever (Close would then panic it). So the connector keeps clients
// others use out of rediscovery:
//
//   - a client is used by others only after one discovery succeeded on it, done
//     by the connector alone (dial);
//   - the first connection error a user sees retires the client: later calls get
//     a new one, dialled with backoff; the old one is closed when its last user
//     is done, so Close never meets a sender;
//   - one window remains: a call that took the client just before another
//     call's error retired it can still start a rediscovery, and if that fails,
//     calls that entered the client meanwhile are stuck. Calls therefore run in
//     a goroutine of their own (call), so that the caller's context is honoured
//     and the caller moves on to the new client; a stuck goroutine is abandoned,
//     and its client is never closed.

// A generation is one client and its users.
type generation struct {
	client  *kurrentdb.Client
	refs    int  // guarded by connector.mu
	retired bool // guarded by connector.mu
	closed  bool // guarded by connector.mu
}

type connector struct {
	cfg     kurrentdb.Configuration
	log     *slog.Logger
	minWait time.Duration
	maxWait time.Duration
	done    <-chan struct{} // the store is closed

	mu      sync.Mutex
	cur     *generation   // nil while (re)connecting
	ready   chan struct{} // closed when cur is set
	dialing bool
	lastErr error
	closed  bool
	gens    map[*generation]struct{} // not yet closed
}

func newConnector(cfg *kurrentdb.Configuration, opts Options, done <-chan struct{}) *connector {
	return &connector{cfg: *cfg, log: opts.Logger, minWait: opts.MinBackoff, maxWait: opts.MaxBackoff,
		done: done, ready: make(chan struct{}), gens: map[*generation]struct{}{}}
}

// connect dials the first client, once, and makes it current.
func (c *connector) connect(ctx context.Context) error {
	g, err := c.dial(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.cur = g
	close(c.ready)
	c.mu.Unlock()
	return nil
}

// dial creates a client and runs its first discovery. Nobody else uses the
// client before dial returns it.
func (c *connector) dial(ctx context.Context) (*generation, error) {
	cfg := c.cfg
	client, err := kurrentdb.NewClient(&cfg)
	if err != nil {
		return nil, err
	}
	type result struct {
		v   *kurrentdb.ServerVersion
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := client.GetServerVersion()
		ch <- result{v, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		go func() { <-ch; client.Close() }()
		return nil, ctx.Err()
	case <-c.done:
		go func() { <-ch; client.Close() }()
		return nil, eventstore.ErrClosed
	}
	if r.err != nil {
		client.Close()
		return nil, r.err
	}
	if !r.v.IsAtLeast(26, 1, 0) {
		client.Close()
		return nil, fmt.Errorf("KurrentDB %d.%d.%d does not offer AppendRecords; the ledger needs KurrentDB 26.1 or later",
			r.v.Major, r.v.Minor, r.v.Patch)
	}
	g := &generation{client: client}
	c.mu.Lock()
	c.gens[g] = struct{}{}
	c.mu.Unlock()
	return g, nil
}

// acquire returns the current client, waiting for a reconnection if needed.
// The caller must release it.
func (c *connector) acquire(ctx context.Context) (*generation, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, eventstore.ErrClosed
		}
		if g := c.cur; g != nil {
			g.refs++
			c.mu.Unlock()
			return g, nil
		}
		if !c.dialing {
			c.dialing = true
			go c.redial()
		}
		ready, lastErr := c.ready, c.lastErr
		c.mu.Unlock()
		select {
		case <-ready:
		case <-ctx.Done():
			if lastErr != nil {
				return nil, fmt.Errorf("%w: %w (last connection error: %v)", errNotConnected, ctx.Err(), lastErr)
			}
			return nil, fmt.Errorf("%w: %w", errNotConnected, ctx.Err())
		case <-c.done:
			return nil, eventstore.ErrClosed
		}
	}
}

// release ends a use of g. A connection error retires g, unless it came from
// the caller's own context ending.
func (c *connector) release(g *generation, err error, ctx context.Context) {
	c.mu.Lock()
	g.refs--
	if err != nil && ctx.Err() == nil && retires(err) && !g.retired {
		g.retired = true
		if c.cur == g {
			c.cur = nil
			c.ready = make(chan struct{})
			c.log.Warn("kurrent: connection lost; reconnecting", "err", err)
		}
	}
	closeIt := g.refs == 0 && (g.retired || c.closed) && !g.closed
	if closeIt {
		g.closed = true
		delete(c.gens, g)
	}
	c.mu.Unlock()
	if closeIt {
		g.client.Close()
	}
}

// redial replaces a retired client, with exponential backoff, until it succeeds
// or the store closes.
func (c *connector) redial() {
	b := backoff{min: c.minWait, max: c.maxWait}
	for {
		g, err := c.dial(context.Background())
		c.mu.Lock()
		if c.closed {
			c.dialing = false
			if g != nil {
				g.closed = true
				delete(c.gens, g)
			}
			c.mu.Unlock()
			if g != nil {
				g.client.Close()
			}
			return
		}
		if err == nil {
			c.cur, c.dialing, c.lastErr = g, false, nil
			close(c.ready)
			c.mu.Unlock()
			c.log.Info("kurrent: reconnected")
			return
		}
		c.lastErr = err
		c.mu.Unlock()
		wait := b.next()
		c.log.Warn("kurrent: reconnect failed", "err", err, "retry_in", wait)
		select {
		case <-time.After(wait):
		case <-c.done:
		}
	}
}

// call runs f with the current client and a context derived from ctx that
// asks for the leader (see leader). f runs in a goroutine of its own (see
// "Connections" above); when ctx ends first, call returns ctx's error and f's
// result is dropped.
func (c *connector) call(ctx context.Context, f func(context.Context, *kurrentdb.Client) error) error {
	g, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		err := f(leader(ctx), g.client)
		c.release(g, err, ctx)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// leader marks every request as needing the leader, so that reads see every
// acknowledged append (the version checks and Head depend on it, and so does
// crypto/sharedvault's reading of tombstones). A follower answers "not leader"
// with the leader's address; the client reconnects there and the store retries.
// The client's own RequiresLeader option puts the header in the incoming
// metadata, where it is never sent, so the store sets it itself.
func leader(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "requires-leader", "true")
}

// close closes every client nobody uses; the others close when released.
func (c *connector) close() {
	c.mu.Lock()
	c.closed = true
	c.cur = nil
	var idle []*generation
	for g := range c.gens {
		if g.refs == 0 {
			g.closed = true
			idle = append(idle, g)
			delete(c.gens, g)
		}
	}
	c.mu.Unlock()
	for _, g := range idle {
		g.client.Close()
	}
}

// backoff is exponential with jitter: each wait is between half and all of
// min·2ⁿ, capped at max.
type backoff struct {
	min, max time.Duration
	n        int
}

func (b *backoff) next() time.Duration {
	d := b.min << min(b.n, 20)
	if d > b.max || d <= 0 {
		d = b.max
	} else {
		b.n++
	}
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.n = 0 }
