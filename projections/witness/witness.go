// Package witness has the ledger's checkpoints cosigned by outside witnesses
// (C2SP tlog-witness). A witness cosigns a checkpoint only when a consistency
// proof shows that it extends the last one of the same log it cosigned, so a
// checkpoint cosigned by witnesses a reader trusts is on the one history every
// reader of those witnesses sees: the node cannot show the regulator one log
// and the auditors another.
//
// A Cosigner follows the ledger's Merkle tree. Each round signs a checkpoint
// of the tree as it stands, posts it to every witness with a consistency proof
// from the size that witness last cosigned, and, when at least the quorum of
// them cosigned it, keeps the checkpoint with their cosignatures as the latest
// witnessed one. Rounds run when the tree has grown: every Interval, and at
// once when WaitFor asks (an erasure receipt wants its evidence witnessed).
// With Refresh set, a round also runs when the tree has not grown but the
// latest witnessed checkpoint is older than Refresh: the same checkpoint is
// posted again (with no proof: the witness checks that it is the one it
// holds) and gets cosignatures of the current time, so that readers who bound
// their age (caledger audit --witness-max-age) can tell a quiet ledger from a
// node that hides its growth behind an old checkpoint.
//
// With a Keeper, each witnessed checkpoint is also kept (a file of the node),
// and Restore (or Run) starts from the kept one once it has checked it again:
// a node restarted while its witnesses are down still serves the checkpoint
// they last cosigned. Without one, or when the kept one does not check, the
// first round regains one: a witness answers a stale "old" size with the size
// it holds (409), and the round proves consistency from there.
package witness

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/caledger/caledger/crypto/checkpoint"
)

// Witness is one witness the checkpoints are posted to.
type Witness struct {
	// URL is the witness's submission prefix: checkpoints are posted to
	// URL + "/add-checkpoint".
	URL string
	// VKey is the note verifier key of its cosignatures
	// (checkpoint.ParseWitnesses says which are accepted).
	VKey string
}

// Tree is the ledger's Merkle tree (projections/tree).
type Tree interface {
	Size() uint64
	Root(ctx context.Context, size uint64) ([]byte, error)
	ConsistencyProof(ctx context.Context, size1, size2 uint64) ([][]byte, error)
}

// Signer signs checkpoints with the log's key (crypto/checkpoint).
type Signer interface {
	Sign(size uint64, root []byte) ([]byte, error)
	// Verify opens a checkpoint the log's key signed.
	Verify(signed []byte) (log.Checkpoint, error)
	VerifierKey() string
}

// Options configure a Cosigner.
type Options struct {
	Witnesses []Witness
	// Quorum is how many witnesses must cosign a checkpoint; 0 means all.
	Quorum int
	// Interval is the time between rounds while the tree grows; 0 means a
	// minute. A failed round is retried sooner: after 1 s, doubling up to
	// Interval.
	Interval time.Duration
	// Refresh is the age at which the latest witnessed checkpoint is
	// cosigned again though the tree has not grown; 0 means never. Rounds
	// run every Interval, so a checkpoint is refreshed when it is between
	// Refresh and Refresh + Interval old.
	Refresh time.Duration
	// Client posts to the witnesses; nil means one with a 10 s timeout.
	Client *http.Client
	Logger *slog.Logger
	// Keeper, if not nil, keeps the latest witnessed checkpoint across
	// restarts.
	Keeper Keeper
}

// Keeper keeps the bytes of the latest witnessed checkpoint, such as in a
// file replaced atomically. Load returns nil when nothing is kept. What Load
// returns is checked before it is used (the log's signature, the quorum of
// cosignatures, the root against the tree), so a damaged or planted copy is
// ignored, not served.
type Keeper interface {
	Load(ctx context.Context) ([]byte, error)
	Save(ctx context.Context, b []byte) error
}

// keptFormat names the encoding of a kept checkpoint.
const keptFormat = "caledger-witnessed/1"

// kept is a witnessed checkpoint as a Keeper keeps it: the log's signed
// checkpoint and the witnesses' cosignature lines apart, so that each line is
// checked on its own when it is loaded.
type kept struct {
	Format       string    `json:"format"`
	At           time.Time `json:"at"`
	Signed       string    `json:"signed"`
	Cosignatures string    `json:"cosignatures"`
}

// Checkpoint is a witnessed checkpoint: the log's signed note with the
// witnesses' cosignature lines after its own.
type Checkpoint struct {
	Size uint64
	Note []byte
	// At is when the quorum's cosignatures were received, by the node's
	// clock (zero for a partly cosigned checkpoint); for one restored from
	// the Keeper, at most its newest cosignature's time, by that witness's
	// clock.
	At time.Time
}

// Cosigner gets the tree's checkpoints cosigned. Run does the rounds; the
// other methods may be called from any goroutine.
type Cosigner struct {
	tree      Tree
	signer    Signer
	urls      []string
	verifiers []note.Verifier
	quorum    int
	interval  time.Duration
	refresh   time.Duration
	client    *http.Client
	logger    *slog.Logger
	keeper    Keeper
	kick      chan struct{}
	// known is, per witness, the size of the last checkpoint it cosigned (0
	// while unknown). Only a round (each witness's entry from that witness's
	// goroutine) and restore touch it, both on Run's goroutine, or restore
	// before Run.
	known    []uint64
	failures []atomic.Uint64
	// latestLines are, per witness, its cosignature line in the latest
	// witnessed checkpoint (nil: none). Only a round and restore touch them.
	latestLines [][]byte
	// keptPending is set while the Keeper's checkpoint may still be adopted:
	// until it is, or a round witnesses one, or it fails a check other than
	// the tree's size. After restore it is left set only for a kept
	// checkpoint the tree does not cover yet, and rounds wait for the tree.
	// Only restore and round touch it, on Run's goroutine or before Run.
	keptPending bool

	mu sync.Mutex
	// latest is the latest witnessed checkpoint (Size 0: none yet).
	latest Checkpoint
	// partial is the checkpoint of the last round that posted and got some
	// cosignatures but fewer than the quorum, with those cosignatures (Size
	// 0: none, or a later round met the quorum or got none).
	partial Checkpoint
	// started and finished count the rounds; lastErr is why the last one
	// failed (nil if it did not).
	started, finished uint64
	lastErr           error
	// changed is closed and replaced when a round finishes.
	changed chan struct{}
}

// maxAnswer bounds what is read of a witness's answer: a few signature lines.
const maxAnswer = 64 << 10

// New returns a Cosigner. It refuses the witnesses that a reader would
// (checkpoint.ParseWitnesses): the log's own key, a witness named twice, a
// quorum that cannot be met. Nothing is contacted until Run.
func New(tree Tree, signer Signer, opts Options) (*Cosigner, error) {
	var urls, vkeys []string
	for _, w := range opts.Witnesses {
		if w.URL == "" {
			return nil, errors.New("witness: a witness needs a URL")
		}
		urls, vkeys = append(urls, strings.TrimRight(w.URL, "/")), append(vkeys, w.VKey)
	}
	ws, err := checkpoint.ParseWitnesses(vkeys, opts.Quorum, signer.VerifierKey())
	if err != nil {
		return nil, err
	}
	c := &Cosigner{tree: tree, signer: signer, urls: urls, verifiers: ws.Verifiers(), quorum: ws.Quorum(),
		interval: opts.Interval, refresh: max(opts.Refresh, 0), client: opts.Client, logger: opts.Logger, keeper: opts.Keeper,
		kick: make(chan struct{}, 1), known: make([]uint64, len(urls)), latestLines: make([][]byte, len(urls)),
		failures: make([]atomic.Uint64, len(urls)), changed: make(chan struct{}), keptPending: opts.Keeper != nil}
	if c.interval <= 0 {
		c.interval = time.Minute
	}
	if c.client == nil {
		c.client = &http.Client{Timeout: 10 * time.Second}
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Run does rounds until ctx ends: one at once, then every Interval and when
// WaitFor asks. After a failed round, the next waits for the retry's backoff
// even when WaitFor asks: clients asking again and again for an erasure
// receipt do not drive rounds at witnesses that are down. With a Keeper whose
// checkpoint has not been adopted yet, each round is preceded by Restore.
func (c *Cosigner) Run(ctx context.Context) error {
	next := time.NewTimer(0)
	defer next.Stop()
	retry := time.Second
	failed := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-next.C:
		case <-c.kick:
			if failed {
				continue // the timer's round comes soon enough
			}
		}
		c.restore(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.mu.Lock()
		c.started++
		c.mu.Unlock()
		err := c.round(ctx)
		c.mu.Lock()
		c.finished++
		c.lastErr = err
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := c.interval
		if failed = err != nil; failed {
			c.logger.Warn("the ledger's checkpoint was not witnessed; retrying", "err", err, "retry_in", retry)
			wait, retry = min(retry, c.interval), min(2*retry, c.interval)
		} else {
			retry = time.Second
		}
		next.Reset(wait)
	}
}

// Restore makes the Keeper's checkpoint the latest witnessed one, if there is
// no latest yet and it checks (see adopt); a node calls it before it serves,
// so that the kept checkpoint is there from its first request. One that fails
// a check is logged and not used; one of more events than the tree has yet is
// tried again before each of Run's rounds, and no round posts until the tree
// covers it (the witnesses would refuse a smaller checkpoint). It must not be
// called while Run runs.
func (c *Cosigner) Restore(ctx context.Context) { c.restore(ctx) }

// restore is Restore, on Run's goroutine or before Run.
func (c *Cosigner) restore(ctx context.Context) {
	if !c.keptPending {
		return
	}
	err := c.adopt(ctx)
	switch {
	case err == nil:
		c.keptPending = false
	case ctx.Err() != nil:
	case errors.Is(err, errKeptAhead):
		// Logged at every try (before each round, an Interval apart): a
		// tree being rebuilt catches up, but a ledger that lost events
		// never does, and the witnesses then hold a fork of it.
		c.logger.Warn("the kept witnessed checkpoint waits for the tree; no round runs until the tree covers it (a ledger that lost events never does: the witnesses hold a fork)", "err", err)
	default:
		c.keptPending = false
		c.logger.Warn("the kept witnessed checkpoint is not used; the first round gets a new one", "err", err)
	}
}

// Latest returns the latest witnessed checkpoint; false when there is none
// yet.
func (c *Cosigner) Latest() (Checkpoint, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.latest, c.latest.Size > 0
}

// Failures counts, per witness name, the rounds in which that witness did not
// cosign.
func (c *Cosigner) Failures() map[string]uint64 {
	out := make(map[string]uint64, len(c.verifiers))
	for i, v := range c.verifiers {
		out[v.Name()] = c.failures[i].Load()
	}
	return out
}

// WaitFor returns a witnessed checkpoint of at least size leaves. When the
// latest is smaller, it asks for a round (at once, unless the last one failed:
// then at the retry) and waits for it; the tree must already cover size. It
// fails when that round does not get the checkpoint witnessed, or when ctx
// ends first (the error then says why the last round failed, if it did). When
// the last round got some cosignatures but fewer than the quorum, the error
// comes with that checkpoint and those cosignatures: a reader who requires
// fewer witnesses may accept it.
func (c *Cosigner) WaitFor(ctx context.Context, size uint64) (Checkpoint, error) {
	c.mu.Lock()
	latest := c.latest
	// The first round to start after the kick below sees the tree covering
	// size.
	target := c.started + 1
	c.mu.Unlock()
	if latest.Size >= size {
		return latest, nil
	}
	select {
	case c.kick <- struct{}{}:
	default: // a round is asked for already; it starts after this point
	}
	for {
		c.mu.Lock()
		latest, partial, finished, lastErr, changed := c.latest, c.partial, c.finished, c.lastErr, c.changed
		c.mu.Unlock()
		switch {
		case latest.Size >= size:
			return latest, nil
		case finished >= target && lastErr != nil && partial.Size >= size:
			return partial, lastErr
		case finished >= target && lastErr != nil:
			return Checkpoint{}, lastErr
		case finished >= target:
			return Checkpoint{}, fmt.Errorf("witness: no checkpoint of %d events was witnessed: the tree has %d", size, c.tree.Size())
		}
		select {
		case <-changed:
		case <-ctx.Done():
			err := ctx.Err()
			if lastErr != nil {
				err = fmt.Errorf("%w; the last round: %w", err, lastErr)
			}
			if partial.Size >= size {
				return partial, err
			}
			return Checkpoint{}, err
		}
	}
}

// round gets the tree's checkpoint cosigned, if the tree grew since the latest
// witnessed one, or the latest is older than the refresh age.
func (c *Cosigner) round(ctx context.Context) error {
	if c.keptPending {
		// Restore left the kept checkpoint waiting for the tree: the
		// witnesses hold its size, and a smaller checkpoint would only be
		// refused (409), and look like a fork.
		return nil
	}
	size := c.tree.Size()
	latest, _ := c.Latest()
	stale := c.refresh > 0 && time.Since(latest.At) >= c.refresh
	if size == 0 || size < latest.Size || (size == latest.Size && !stale) {
		return nil
	}
	root, err := c.tree.Root(ctx, size)
	if err != nil {
		return fmt.Errorf("witness: the tree's root: %w", err)
	}
	signed, err := c.signer.Sign(size, root)
	if err != nil {
		return err
	}
	lines := make([][]byte, len(c.urls))
	errs := make([]error, len(c.urls))
	var wg sync.WaitGroup
	for i := range c.urls {
		wg.Go(func() {
			if lines[i], errs[i] = c.add(ctx, i, size, signed); errs[i] != nil {
				c.failures[i].Add(1)
			}
		})
	}
	wg.Wait()
	n := 0
	for _, line := range lines {
		if line != nil {
			n++
		}
	}
	if n < c.quorum {
		c.mu.Lock()
		c.partial = Checkpoint{}
		if n > 0 {
			c.partial = Checkpoint{Size: size, Note: withLines(signed, lines)}
		}
		c.mu.Unlock()
		return fmt.Errorf("witness: %d of the %d witnesses required cosigned the checkpoint of %d events: %w", n, c.quorum, size, errors.Join(errs...))
	}
	// The quorum is met; a witness that did not cosign is behind, and the
	// next round tries it again. A refresh keeps the earlier cosignature of
	// a witness that did not answer: it is of the same checkpoint, and a
	// reader requiring every witness still accepts the refreshed one.
	for i, err := range errs {
		if err != nil {
			c.logger.Warn("a witness did not cosign the ledger's checkpoint", "witness", c.verifiers[i].Name(), "size", size, "err", err)
			if size == latest.Size {
				lines[i] = c.latestLines[i]
			}
		}
	}
	c.latestLines = lines
	at := time.Now()
	c.mu.Lock()
	c.latest, c.partial = Checkpoint{Size: size, Note: withLines(signed, lines), At: at}, Checkpoint{}
	c.mu.Unlock()
	c.keptPending = false
	if c.keeper != nil {
		// Not keeping it fails nothing: the node serves it from memory; after
		// a restart the one kept before, if any, is served until a round
		// gets a new one.
		k := kept{Format: keptFormat, At: at.UTC(), Signed: string(signed), Cosignatures: string(bytes.Join(lines, nil))}
		b, err := json.Marshal(k)
		if err == nil {
			err = c.keeper.Save(ctx, b)
		}
		if err != nil {
			c.logger.Warn("the witnessed checkpoint is not kept", "size", size, "err", err)
		}
	}
	return nil
}

// errKeptAhead is adopt's error for a kept checkpoint the tree does not cover
// yet.
var errKeptAhead = errors.New("witness: the kept checkpoint is ahead of the tree")

// adopt makes the Keeper's checkpoint the latest witnessed one, after checking
// it as a reader would: the log's signature, a checkpoint of the tree (its
// root at its size), and at least the quorum of cosignatures of the
// configured witnesses. Lines of witnesses no longer configured are dropped.
// Its time, which no signature covers, is taken as at most the newest
// cosignature's. Nothing changes when a check fails. A kept checkpoint of more
// events than the tree has yet (a tree being rebuilt, or behind after a crash)
// fails with errKeptAhead.
func (c *Cosigner) adopt(ctx context.Context) error {
	b, err := c.keeper.Load(ctx)
	if err != nil || b == nil {
		return err
	}
	var k kept
	if err := json.Unmarshal(b, &k); err != nil {
		// The error may quote the file; it holds nothing personal, but it
		// need not fill the log either.
		return errors.New("witness: the kept checkpoint is not the JSON this program writes")
	}
	if k.Format != keptFormat {
		return fmt.Errorf("witness: the kept checkpoint has format %.40q, want %q", k.Format, keptFormat)
	}
	if k.At.IsZero() {
		return errors.New("witness: the kept checkpoint has no time")
	}
	signed := []byte(k.Signed)
	cp, err := c.signer.Verify(signed)
	if err != nil {
		return fmt.Errorf("witness: the kept checkpoint does not verify with the log's key: %w", err)
	}
	if _, sigs, _ := bytes.Cut(signed, []byte("\n\n")); bytes.Count(sigs, []byte("\n")) != 1 {
		// The log's signature line only: the cosignatures are kept apart,
		// each checked below.
		return errors.New("witness: the kept checkpoint carries other signatures than the log's")
	}
	if cp.Size == 0 {
		return errors.New("witness: the kept checkpoint is of no events")
	}
	if size := c.tree.Size(); cp.Size > size {
		return fmt.Errorf("%w: it is of %d events, and the tree has %d", errKeptAhead, cp.Size, size)
	}
	root, err := c.tree.Root(ctx, cp.Size)
	if err != nil {
		return fmt.Errorf("witness: the tree's root: %w", err)
	}
	if !bytes.Equal(root, cp.Hash) {
		return fmt.Errorf("witness: the kept checkpoint of %d events has another root than the tree", cp.Size)
	}
	lines := make([][]byte, len(c.verifiers))
	n := 0
	var newest time.Time
	for i, v := range c.verifiers {
		if line, cs, err := checkpoint.CheckCosignature(signed, []byte(k.Cosignatures), v); err == nil {
			lines[i] = line
			n++
			if cs.Time.After(newest) {
				newest = cs.Time
			}
		}
	}
	if n < c.quorum {
		return fmt.Errorf("witness: the kept checkpoint of %d events holds %d of the %d cosignatures required", cp.Size, n, c.quorum)
	}
	at := k.At
	if at.After(newest) {
		// The witnesses' times are signed, second by second; the file's is
		// not. A later one would put off the refresh and show in the metric.
		at = newest
	}
	if now := time.Now(); at.After(now) {
		at = now // a witness's clock ahead
	}
	for i, line := range lines {
		if line != nil {
			c.known[i] = max(c.known[i], cp.Size) // a failed round may have learnt more
		}
	}
	c.latestLines = lines
	c.mu.Lock()
	c.latest = Checkpoint{Size: cp.Size, Note: withLines(signed, lines), At: at}
	c.mu.Unlock()
	return nil
}

// withLines is the signed checkpoint followed by the cosignature lines that
// are not nil.
func withLines(signed []byte, lines [][]byte) []byte {
	note := bytes.Clone(signed)
	for _, line := range lines {
		note = append(note, line...)
	}
	return note
}

// add posts the checkpoint signed (of size leaves) to witness i and returns
// its cosignature line. A witness that holds another size than the one
// assumed says so (409) and is asked once more, with a proof from its size.
func (c *Cosigner) add(ctx context.Context, i int, size uint64, signed []byte) ([]byte, error) {
	name := c.verifiers[i].Name()
	for range 2 {
		old := c.known[i]
		var proof [][]byte
		if old > 0 && old < size {
			var err error
			if proof, err = c.tree.ConsistencyProof(ctx, old, size); err != nil {
				return nil, fmt.Errorf("witness %s: the consistency proof from %d: %w", name, old, err)
			}
		}
		var body bytes.Buffer
		fmt.Fprintf(&body, "old %d\n", old)
		for _, h := range proof {
			fmt.Fprintf(&body, "%s\n", base64.StdEncoding.EncodeToString(h))
		}
		body.WriteByte('\n')
		body.Write(signed)
		status, answer, contentType, err := c.post(ctx, c.urls[i]+"/add-checkpoint", body.Bytes())
		if err != nil {
			return nil, fmt.Errorf("witness %s: %w", name, err)
		}
		switch status {
		case http.StatusOK:
			line, _, err := checkpoint.CheckCosignature(signed, answer, c.verifiers[i])
			if err != nil {
				return nil, fmt.Errorf("witness %s: %w", name, err)
			}
			c.known[i] = size
			return line, nil
		case http.StatusConflict:
			held, err := strconv.ParseUint(strings.TrimSpace(string(answer)), 10, 64)
			if err != nil || !strings.HasPrefix(contentType, "text/x.tlog.size") {
				return nil, fmt.Errorf("witness %s: answered 409 without the size it holds", name)
			}
			if held > size {
				// The witness cosigned a longer log of this origin: another
				// node of the cluster is ahead of this one's tree (a later
				// round proves consistency from there), or this tree is a
				// fork (a ledger restored from an older backup, or another
				// ledger under the same name).
				return nil, fmt.Errorf("witness %s: it cosigned %d events of this log, and this node's tree has %d: another node is ahead, or this ledger is not the one it witnessed", name, held, size)
			}
			if held == old {
				return nil, fmt.Errorf("witness %s: answered 409 for the size it holds, %d", name, held)
			}
			c.known[i] = held
		case http.StatusNotFound:
			return nil, fmt.Errorf("witness %s: it does not know this log: add the log's origin and verifier key to it", name)
		case http.StatusForbidden:
			return nil, fmt.Errorf("witness %s: it refused the checkpoint's signature: it does not know this log, or holds another verifier key for it", name)
		case http.StatusUnprocessableEntity:
			return nil, fmt.Errorf("witness %s: it refused the consistency proof from %d to %d events: the ledger is not the one it witnessed", name, old, size)
		default:
			return nil, fmt.Errorf("witness %s: answered %d: %q", name, status, firstLine(answer))
		}
	}
	return nil, fmt.Errorf("witness %s: the size it holds changed while it was asked", name)
}

// post posts body and returns the answer's status, body and content type.
func (c *Cosigner) post(ctx context.Context, url string, body []byte) (int, []byte, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, "", err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return 0, nil, "", err
	}
	return resp.StatusCode, answer, resp.Header.Get("Content-Type"), nil
}

// firstLine is the start of an error answer, for a log line.
func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	if len(line) > 200 {
		line = line[:200]
	}
	return string(line)
}
