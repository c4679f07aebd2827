package tree

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/mattn/go-sqlite3" // the "sqlite3" driver
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/sqlitefile"
	"github.com/caledger/caledger/projections"
	"github.com/caledger/caledger/projections/handoff"
)

// Source is the ledger the tree follows, as the views follow it.
// eventstore.Store implements it.
type Source = projections.Source

// ErrRange is matched (errors.Is) by the errors of Root, InclusionProof and
// ConsistencyProof for a size or index outside the tree, or an invalid
// combination of them: the caller's request, not the tree, is at fault.
var ErrRange = errors.New("tree: size or index out of range")

var (
	errClosed = errors.New("tree: closed")
	errBusy   = errors.New("tree: Run is already running")
)

const (
	// format identifies the file's layout and hashing: RFC 6962 with SHA-256
	// over format 1 of domain.Encode.
	format = 1
	// maxBatch is the most leaves one transaction appends, and how far the
	// reader may run ahead of the writer.
	maxBatch = 4096
	// insertRows is how many nodes one INSERT statement writes.
	insertRows = 128
	// defaultLivePause is Tree.livePause: checkpoints trail the ledger by
	// about this much.
	defaultLivePause = 100 * time.Millisecond
	// fetchIDs is how many nodes one SELECT reads.
	fetchIDs = 256
)

const schema = `
CREATE TABLE IF NOT EXISTS meta (
	id     INTEGER PRIMARY KEY CHECK (id = 1),
	format INTEGER NOT NULL,
	size   INTEGER NOT NULL, -- leaves committed
	root   BLOB              -- root hash of the tree of size leaves; NULL when size is 0
);
CREATE TABLE IF NOT EXISTS nodes (
	level INTEGER NOT NULL,
	idx   INTEGER NOT NULL,
	hash  BLOB NOT NULL,
	PRIMARY KEY (level, idx)
) WITHOUT ROWID;
`

// state is what Run has committed: the size and the root of that tree.
type state struct {
	size uint64
	root []byte
}

// Tree is the Merkle tree of one ledger, in one SQLite file. It is safe for
// concurrent use: Root, the proofs, Size and WaitFor run alongside Run, reading
// through a pool of connections what Run has committed.
type Tree struct {
	path string
	lock *os.File
	wdb  *sql.DB // one connection: Run's writes
	rdb  *sql.DB // Root and proofs

	cur atomic.Pointer[state] // published after each commit

	// active is held by Run; r and the fields below it are used only by its
	// holder (and by Open before anyone else can).
	active  sync.Mutex
	r       *compact.Range // [0, size)
	inserts [insertRows + 1]string
	args    []any

	mu     sync.Mutex
	notify chan struct{} // closed and replaced at every commit, and at Close

	stop      context.Context // done once Close starts
	cancel    context.CancelFunc
	closeOnce sync.Once
	closeErr  error

	// livePause is how long Run waits after a commit that took less than a
	// full batch (it has caught up with the ledger) before it commits again:
	// live, the tree commits a few times a second rather than once per
	// ledger commit, which halves what it costs beside issuance. Tests set it
	// to 0.
	livePause time.Duration

	// onCommit, when set (by tests), is called after each commit with the
	// number of leaves it appended.
	onCommit func(leaves int)
	// onWait, when set (by tests), is called when WaitFor is about to block.
	onWait func()
}

// Open opens the tree file at path, creating it (mode 0600, its directory
// 0700) if needed. Only one process may have the file open. Open reads the
// nodes of the tree's right edge back and checks them against the stored root,
// so a damaged file fails here rather than in a proof.
func Open(ctx context.Context, path string) (_ *Tree, err error) {
	t := &Tree{notify: make(chan struct{}), livePause: defaultLivePause}
	t.stop, t.cancel = context.WithCancel(context.Background())
	if t.path, err = filepath.Abs(path); err != nil {
		return nil, fmt.Errorf("tree: %w", err)
	}
	defer func() {
		if err != nil {
			t.cancel()
			t.closeFiles()
		}
	}()
	if _, _, err := sqlitefile.Create(t.path); err != nil {
		return nil, fmt.Errorf("tree: %w", err)
	}
	if t.lock, err = sqlitefile.Lock(t.path+".lock", t.path); err != nil {
		return nil, fmt.Errorf("tree: %w", err)
	}
	if t.wdb, err = sql.Open("sqlite3", sqlitefile.DSN(t.path, map[string]string{
		"_journal_mode": "WAL", "_synchronous": "NORMAL", "_busy_timeout": "5000",
		"_txlock": "immediate", "_stmt_cache_size": "32",
	})); err != nil {
		return nil, fmt.Errorf("tree: %w", err)
	}
	t.wdb.SetMaxOpenConns(1)
	t.wdb.SetMaxIdleConns(1)
	if err := checkWAL(ctx, t.wdb); err != nil {
		return nil, err
	}
	if _, err := t.wdb.ExecContext(ctx, schema); err != nil {
		return nil, fmt.Errorf("tree: create schema: %w", err)
	}
	// A new file is stamped with this build's format; load refuses others.
	if _, err := t.wdb.ExecContext(ctx, `INSERT OR IGNORE INTO meta (id, format, size, root) VALUES (1, ?, 0, NULL)`, format); err != nil {
		return nil, fmt.Errorf("tree: create schema: %w", err)
	}
	st, err := t.load(ctx)
	if err != nil {
		return nil, err
	}
	if t.rdb, err = sql.Open("sqlite3", sqlitefile.DSN(t.path, map[string]string{
		"_query_only": "true", "_busy_timeout": "5000", "_stmt_cache_size": "16",
	})); err != nil {
		return nil, fmt.Errorf("tree: %w", err)
	}
	t.rdb.SetMaxOpenConns(8)
	t.rdb.SetMaxIdleConns(8)
	if err := checkWAL(ctx, t.rdb); err != nil {
		return nil, err
	}
	t.cur.Store(st)
	return t, nil
}

// load reads the committed size and root, and rebuilds t.r from the stored
// nodes.
func (t *Tree) load(ctx context.Context) (*state, error) {
	var f int
	var size uint64
	var root []byte
	if err := t.wdb.QueryRowContext(ctx, `SELECT format, size, root FROM meta WHERE id = 1`).Scan(&f, &size, &root); err != nil {
		return nil, fmt.Errorf("tree: read meta: %w", err)
	}
	if f != format {
		return nil, fmt.Errorf("tree: %s has format %d, this program reads format %d; delete it to rebuild the tree", t.path, f, format)
	}
	hashes, err := fetch(ctx, t.wdb, compact.RangeNodes(0, size, nil))
	if err != nil {
		return nil, fmt.Errorf("%w; delete %s to rebuild the tree", err, t.path)
	}
	if t.r, err = newRange(size, hashes); err != nil {
		return nil, fmt.Errorf("tree: %w", err)
	}
	got := rootOf(t.r)
	if size == 0 {
		root = got
	}
	if !bytes.Equal(got, root) {
		return nil, fmt.Errorf("tree: %s is damaged: its nodes do not give the root recorded for size %d; delete it to rebuild the tree", t.path, size)
	}
	return &state{size: size, root: root}, nil
}

// rootOf returns the root hash of a range that starts at 0.
func rootOf(r *compact.Range) []byte {
	if r.End() == 0 {
		return rfc6962.DefaultHasher.EmptyRoot()
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		panic(err) // only for a range that does not start at 0
	}
	return root
}

// Close stops a running Run (which returns once its current commit is done),
// waits for it, and closes the file. Later calls fail.
func (t *Tree) Close() error {
	t.closeOnce.Do(func() {
		t.cancel()
		t.active.Lock()
		defer t.active.Unlock()
		t.closeErr = t.closeFiles()
		t.mu.Lock()
		close(t.notify) // wakes WaitFor, which then sees stop
		t.notify = make(chan struct{})
		t.mu.Unlock()
	})
	return t.closeErr
}

func (t *Tree) closeFiles() error {
	var errs []error
	for _, db := range []*sql.DB{t.rdb, t.wdb} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	if t.lock != nil {
		errs = append(errs, t.lock.Close()) // releases the flock
	}
	return errors.Join(errs...)
}

func (t *Tree) closed() bool { return t.stop.Err() != nil }

// Size returns the number of leaves committed, which is the ledger position
// the tree covers.
func (t *Tree) Size() uint64 { return t.cur.Load().size }

// WaitFor returns once Size() >= size. It fails with ctx's error when ctx ends
// first, and with an error when the tree is closed.
func (t *Tree) WaitFor(ctx context.Context, size uint64) error {
	for {
		t.mu.Lock()
		wake := t.notify
		t.mu.Unlock()
		if t.Size() >= size {
			return nil
		}
		if t.closed() {
			return errClosed
		}
		if t.onWait != nil {
			t.onWait()
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.stop.Done():
			return errClosed
		}
	}
}

// publish makes a commit visible to Size, Root, the proofs and WaitFor.
func (t *Tree) publish(st *state) {
	t.cur.Store(st)
	t.mu.Lock()
	close(t.notify)
	t.notify = make(chan struct{})
	t.mu.Unlock()
}

// Root returns the RFC 6962 root hash of the tree of the first size leaves.
// size 0 gives the hash of the empty tree; size > Size() fails with ErrRange.
func (t *Tree) Root(ctx context.Context, size uint64) ([]byte, error) {
	st := t.cur.Load()
	switch {
	case size > st.size:
		return nil, fmt.Errorf("%w: size %d is beyond the tree's %d leaves", ErrRange, size, st.size)
	case size == st.size:
		return slices.Clone(st.root), nil
	case size == 0:
		return rfc6962.DefaultHasher.EmptyRoot(), nil
	}
	if t.closed() {
		return nil, errClosed
	}
	hashes, err := fetch(ctx, t.rdb, compact.RangeNodes(0, size, nil))
	if err != nil {
		return nil, err
	}
	r, err := newRange(size, hashes)
	if err != nil {
		return nil, fmt.Errorf("tree: %w", err)
	}
	return rootOf(r), nil
}

// InclusionProof returns the RFC 6962 audit path of leaf index (the event at
// position index+1) in the tree of the first size leaves. It fails with
// ErrRange unless index < size <= Size().
func (t *Tree) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	if n := t.Size(); size > n {
		return nil, fmt.Errorf("%w: size %d is beyond the tree's %d leaves", ErrRange, size, n)
	}
	if index >= size {
		return nil, fmt.Errorf("%w: leaf %d is not in the tree of %d leaves", ErrRange, index, size)
	}
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRange, err)
	}
	return t.rehash(ctx, nodes)
}

// ConsistencyProof returns the RFC 6962 consistency proof that the tree of the
// first size1 leaves is a prefix of the tree of the first size2 leaves. As in
// RFC 9162, size1 == size2 gives an empty proof. It fails with ErrRange unless
// 0 < size1 <= size2 <= Size().
func (t *Tree) ConsistencyProof(ctx context.Context, size1, size2 uint64) ([][]byte, error) {
	if n := t.Size(); size2 > n {
		return nil, fmt.Errorf("%w: size %d is beyond the tree's %d leaves", ErrRange, size2, n)
	}
	if size1 == 0 || size1 > size2 {
		return nil, fmt.Errorf("%w: no consistency proof from size %d to size %d", ErrRange, size1, size2)
	}
	if size1 == size2 {
		return [][]byte{}, nil
	}
	nodes, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRange, err)
	}
	return t.rehash(ctx, nodes)
}

// rehash reads the nodes a proof needs and builds the proof.
func (t *Tree) rehash(ctx context.Context, nodes proof.Nodes) ([][]byte, error) {
	if t.closed() {
		return nil, errClosed
	}
	hashes, err := fetch(ctx, t.rdb, nodes.IDs)
	if err != nil {
		return nil, err
	}
	p, err := nodes.Rehash(hashes, rfc6962.DefaultHasher.HashChildren)
	if err != nil {
		return nil, fmt.Errorf("tree: %w", err)
	}
	return p, nil
}

// fetch returns the hashes of the nodes ids, in their order. A missing node is
// an error: every node it is asked for is below a committed size.
func fetch(ctx context.Context, db *sql.DB, ids []compact.NodeID) ([][]byte, error) {
	out := make([][]byte, len(ids))
	pos := make(map[compact.NodeID]int, len(ids))
	for i, id := range ids {
		pos[id] = i
	}
	for chunk := range slices.Chunk(ids, fetchIDs) {
		var q strings.Builder
		q.WriteString(`SELECT level, idx, hash FROM nodes WHERE (level, idx) IN (VALUES `)
		args := make([]any, 0, 2*len(chunk))
		for i, id := range chunk {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString("(?,?)")
			args = append(args, int64(id.Level), int64(id.Index))
		}
		q.WriteByte(')')
		rows, err := db.QueryContext(ctx, q.String(), args...)
		if err != nil {
			return nil, fmt.Errorf("tree: read nodes: %w", err)
		}
		for rows.Next() {
			var level uint
			var idx uint64
			var hash []byte
			if err := rows.Scan(&level, &idx, &hash); err != nil {
				rows.Close()
				return nil, fmt.Errorf("tree: read nodes: %w", err)
			}
			id := compact.NewNodeID(level, idx)
			if i, ok := pos[id]; ok {
				out[i] = hash
			}
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("tree: read nodes: %w", err)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("tree: read nodes: %w", err)
		}
	}
	for i, h := range out {
		if h == nil {
			// A duplicate id got its hash through the last of its copies.
			if j := pos[ids[i]]; out[j] != nil {
				out[i] = out[j]
				continue
			}
			return nil, fmt.Errorf("tree: node (level %d, index %d) is missing from the file", ids[i].Level, ids[i].Index)
		}
	}
	return out, nil
}

// Run follows src from position Size()+1 on and appends every event as a
// leaf, until ctx ends (it then returns ctx's error) or the tree is closed;
// reading the ledger, or writing the file, failing ends it with that error.
// Calling Run again continues from Size()+1.
//
// A reader goroutine encodes and hashes the events ahead of the writer, at
// most a few thousand; the writer appends whatever is ready in one transaction
// (the new nodes and the new size together), commits, and publishes the new
// size to Size, WaitFor, Root and the proofs. A live event is thus committed
// as soon as it is read, and a rebuild commits thousands of leaves at a time.
//
// An event whose position is not Size()+1 (a gap, or a ledger that does not
// match the tree) ends Run with an error naming both positions, after the
// leaves before it are committed; nothing is ever skipped. When the tree is
// not empty, Run first checks that the ledger still holds the event of the
// tree's last leaf (see the package documentation). Only one Run may run at a
// time.
func (t *Tree) Run(ctx context.Context, src Source) error {
	parent := ctx
	if !t.active.TryLock() {
		return errBusy
	}
	defer t.active.Unlock()
	if t.closed() {
		return errClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(t.stop, cancel)()
	// ended is Run's error once ctx has ended.
	ended := func() error {
		if err := parent.Err(); err != nil {
			return err
		}
		return errClosed
	}

	if err := t.checkLedger(ctx, src); err != nil {
		if ctx.Err() != nil {
			return ended()
		}
		return err
	}

	q := handoff.New[leaf](maxBatch)
	var reader sync.WaitGroup
	from := t.r.End() + 1
	reader.Go(func() { readLeaves(ctx, q, src, from) })
	defer reader.Wait() // Follow's iterator is done before Run returns
	defer cancel()
	// Writes run to completion once started: a cancellation never aborts a
	// commit half-way (it could not corrupt the file, but would waste it).
	wctx := context.WithoutCancel(ctx)
	for {
		if ctx.Err() != nil {
			return ended()
		}
		items, done := q.Take()
		if len(items) == 0 {
			if done {
				// The reader returned without an error: Follow ended.
				if ctx.Err() != nil {
					return ended()
				}
				return fmt.Errorf("tree: the ledger stopped yielding events after position %d", t.r.End())
			}
			select {
			case <-q.Ready():
			case <-ctx.Done():
			}
			continue
		}
		stopErr, err := t.appendBatch(wctx, items)
		if err != nil {
			return err
		}
		if stopErr != nil {
			if ctx.Err() != nil {
				return ended()
			}
			return stopErr
		}
		if len(items) < maxBatch && t.livePause > 0 {
			// Caught up, or nearly: wait a little, unless a full batch
			// (a rebuild that reads slower than it writes) is ready first.
			select {
			case <-time.After(t.livePause):
			case <-q.Full():
			case <-ctx.Done():
			}
		}
	}
}

// checkLedger checks that src is the ledger the tree was built from, as far as
// its last leaf: the ledger is not shorter than the tree, and its event at the
// tree's size has the tree's last leaf hash.
func (t *Tree) checkLedger(ctx context.Context, src Source) error {
	size := t.r.End()
	if size == 0 {
		return nil
	}
	head, err := src.Head(ctx)
	if err != nil {
		return fmt.Errorf("tree: ledger head: %w", err)
	}
	if head < size {
		return fmt.Errorf("tree: the tree covers positions 1 to %d but the ledger's head is %d: the ledger is not the one the tree was built from (restored from an older backup?); delete %s to rebuild the tree", size, head, t.path)
	}
	want, err := fetch(ctx, t.wdb, []compact.NodeID{compact.NewNodeID(0, size-1)})
	if err != nil {
		return err
	}
	e, err := projections.EventAt(ctx, src, size)
	if err != nil {
		return fmt.Errorf("tree: %w", err)
	}
	b, err := domain.Encode(&e)
	if err != nil {
		return fmt.Errorf("tree: event at position %d: %w", size, err)
	}
	if !bytes.Equal(rfc6962.DefaultHasher.HashLeaf(b), want[0]) {
		return fmt.Errorf("tree: the ledger's event at position %d is not the one the tree holds as leaf %d: the ledger is not the one the tree was built from (restored from an older backup?); delete %s to rebuild the tree", size, size-1, t.path)
	}
	return nil
}

// node is a node of the tree with its hash.
type node struct {
	id   compact.NodeID
	hash []byte
}

// appendBatch appends the leaves of items in order, up to the first item that
// is an error or not the next position, and commits them in one transaction.
// It returns that item's error (stop) apart from a failure to write (err),
// after which t.r and the published size follow what the file holds.
func (t *Tree) appendBatch(ctx context.Context, items []leaf) (stop, err error) {
	start := t.r.End()
	saved := slices.Clone(t.r.Hashes())
	var nodes []node
	visit := func(id compact.NodeID, hash []byte) { nodes = append(nodes, node{id, hash}) }
	for _, it := range items {
		if it.err != nil {
			stop = it.err
			break
		}
		if next := t.r.End() + 1; it.position != next {
			stop = fmt.Errorf("tree: the ledger yielded position %d where %d was due (a gap, or a ledger that does not match the tree)", it.position, next)
			break
		}
		if err := t.r.Append(it.hash, visit); err != nil {
			t.restore(start, saved)
			return nil, fmt.Errorf("tree: %w", err)
		}
	}
	end := t.r.End()
	if end == start {
		return stop, nil
	}
	root := rootOf(t.r)
	if err := t.commit(ctx, start, end, root, nodes); err != nil {
		// The commit may have reached the file all the same (an error
		// reported after the fact): the range and the published state
		// follow the file, or Run would stay out of step with it.
		st, lerr := t.load(ctx) // Run's write context: never cancelled
		if lerr != nil {
			t.restore(start, saved)
			return nil, errors.Join(err, lerr)
		}
		t.publish(st)
		return nil, err
	}
	t.publish(&state{size: end, root: root})
	if t.onCommit != nil {
		t.onCommit(int(end - start))
	}
	return stop, nil
}

// restore resets t.r to the range [0, size) with hashes.
func (t *Tree) restore(size uint64, hashes [][]byte) {
	r, err := newRange(size, hashes)
	if err != nil {
		panic(err) // hashes came from a range of that size
	}
	t.r = r
}

// commit writes nodes and moves the size from start to end in one transaction.
func (t *Tree) commit(ctx context.Context, start, end uint64, root []byte, nodes []node) error {
	tx, err := t.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("tree: begin: %w", err)
	}
	defer tx.Rollback()
	for len(nodes) > 0 {
		n := min(len(nodes), insertRows)
		if _, err := tx.ExecContext(ctx, t.insertSQL(n), t.insertArgs(nodes[:n])...); err != nil {
			return fmt.Errorf("tree: write nodes: %w", err)
		}
		nodes = nodes[n:]
	}
	res, err := tx.ExecContext(ctx, `UPDATE meta SET size = ?, root = ? WHERE id = 1 AND size = ?`, int64(end), root, int64(start))
	if err != nil {
		return fmt.Errorf("tree: write size: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("tree: write size: %w", err)
	}
	if n != 1 {
		return fmt.Errorf("tree: the stored size is no longer %d: %s was changed by someone else", start, t.path)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("tree: commit: %w", err)
	}
	return nil
}

// insertSQL returns the INSERT statement for n nodes. go-sqlite3 caches the
// prepared statements by their text (_stmt_cache_size).
func (t *Tree) insertSQL(n int) string {
	if t.inserts[n] == "" {
		var q strings.Builder
		q.WriteString(`INSERT INTO nodes (level, idx, hash) VALUES `)
		for i := range n {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString("(?,?,?)")
		}
		t.inserts[n] = q.String()
	}
	return t.inserts[n]
}

func (t *Tree) insertArgs(nodes []node) []any {
	t.args = t.args[:0]
	for _, n := range nodes {
		t.args = append(t.args, int64(n.id.Level), int64(n.id.Index), n.hash)
	}
	return t.args
}

// leaf is one item the reader hands to Run: the leaf hash of the event at
// position, or the error that ends the reading.
type leaf struct {
	position uint64
	hash     []byte
	err      error
}

// readLeaves reads src from position from on into q, encoding and hashing
// each event, until Follow yields an error (passed on as the last item) or
// ends, or ctx ends.
func readLeaves(ctx context.Context, q *handoff.Queue[leaf], src Source, from uint64) {
	defer q.Finish()
	var buf []byte
	for e, err := range src.Follow(ctx, from) {
		it := leaf{position: e.Position, err: err}
		if err == nil {
			buf, err = domain.AppendEncoded(buf[:0], &e)
			if err != nil {
				it.err = fmt.Errorf("tree: event at position %d does not encode: %w", e.Position, err)
			} else {
				it.hash = rfc6962.DefaultHasher.HashLeaf(buf)
			}
		} else {
			it.err = fmt.Errorf("tree: read ledger: %w", err)
		}
		if !q.Put(ctx, it) {
			return
		}
		if it.err != nil {
			return
		}
	}
}

// checkWAL reads the journal mode back from a pooled connection rather than
// trusting the DSN.
func checkWAL(ctx context.Context, db *sql.DB) error {
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("tree: %w", err)
	}
	if mode != "wal" {
		return fmt.Errorf("tree: journal_mode is %s, want wal", mode)
	}
	return nil
}

// newRange returns the compact range [0, size) of the RFC 6962 tree with the
// given node hashes (compact.RangeNodes order).
func newRange(size uint64, hashes [][]byte) (*compact.Range, error) {
	f := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	return f.NewRange(0, size, hashes)
}
