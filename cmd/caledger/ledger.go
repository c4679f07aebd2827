package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/caledger/caledger/api"
	"github.com/caledger/caledger/crypto/checkpoint"
	"github.com/caledger/caledger/crypto/secretfile"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore"
	"github.com/caledger/caledger/projections/tree"
	"github.com/caledger/caledger/projections/witness"
)

// The auditor's ledger: the Merkle tree over the events (rebuildable, like the
// views) and the node's checkpoint key.
const (
	treeFile           = "views/tree.db"       // projections/tree (rebuildable)
	checkpointKeyFile  = "keys/checkpoint.key" // the note signer and verifier keys (mode 0600)
	checkpointVKeyFile = "ca/checkpoint.vkey"  // the verifier key, for auditors
	checkpointOrigin   = "caledger.ledger/"    // + the root CA certificate's SHA-256, 16 hex digits
	// maxCheckpointKeyFile bounds what is read of the key file: its two note
	// keys take about 200 bytes.
	maxCheckpointKeyFile = 4 << 10
)

// ledgerOrigin names the log after the CA whose ledger it is: every node of
// one CA signs checkpoints of the same log.
func ledgerOrigin(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, rootPEM))
	if err != nil {
		return "", fmt.Errorf("the ledger's origin: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", fmt.Errorf("the ledger's origin: %s holds no PEM certificate", rootPEM)
	}
	sum := sha256.Sum256(block.Bytes)
	return checkpointOrigin + hex.EncodeToString(sum[:8]), nil
}

// loadCheckpointSigner reads the node's checkpoint key, making it (and the
// public verifier key file) on the first start. The log's origin is fixed
// then, from the root CA certificate, and read from the key afterwards.
func loadCheckpointSigner(dataDir string) (*checkpoint.Signer, error) {
	path := filepath.Join(dataDir, checkpointKeyFile)
	vkey := filepath.Join(dataDir, checkpointVKeyFile)
	key, err := secretfile.Read(path, maxCheckpointKeyFile)
	if errors.Is(err, fs.ErrNotExist) {
		// A verifier key without its key: the key was lost, and a new one
		// would not match what auditors hold. Nothing is made.
		if _, serr := os.Stat(vkey); serr == nil {
			return nil, fmt.Errorf("%s is missing while %s exists: restore the key, or remove %s to start a new one (and give its verifier key to the auditors)",
				checkpointKeyFile, checkpointVKeyFile, checkpointVKeyFile)
		}
		origin, oerr := ledgerOrigin(dataDir)
		if oerr != nil {
			return nil, oerr
		}
		if key, err = checkpoint.GenerateKey(origin); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		err = writeFileAtomic(path, key, 0o600)
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint key: %w", err)
	}
	s, err := checkpoint.New(key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", checkpointKeyFile, err)
	}
	// Auditors trust the verifier key they were given: it is written once,
	// and a key that no longer matches it stops the server rather than
	// replacing it without a trace.
	want := []byte(s.VerifierKey() + "\n")
	switch old, err := os.ReadFile(vkey); {
	case errors.Is(err, fs.ErrNotExist):
		if err := writeFileAtomic(vkey, want, 0o644); err != nil {
			return nil, fmt.Errorf("checkpoint verifier key: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("checkpoint verifier key: %w", err)
	case !bytes.Equal(old, want):
		return nil, fmt.Errorf("%s does not match %s: the checkpoint key was replaced, and auditors hold the old verifier key; "+
			"restore the old key, or remove %s to publish the new one (and give it to the auditors)",
			checkpointVKeyFile, checkpointKeyFile, checkpointVKeyFile)
	}
	return s, nil
}

// ledgerLog implements api.Ledger over the event store, the tree, the
// checkpoint key and, when the node has witnesses, their cosigner.
type ledgerLog struct {
	store     eventstore.Store
	tree      *tree.Tree
	signer    *checkpoint.Signer
	witnessed *witness.Cosigner // nil: no witnesses
	logger    *slog.Logger
}

func (l *ledgerLog) Events(ctx context.Context, from uint64, limit int) ([]domain.Event, error) {
	var out []domain.Event
	for e, err := range l.store.ReadAll(ctx, from) {
		if err != nil {
			return nil, err
		}
		out = append(out, e)
		if len(out) == limit {
			break
		}
	}
	return out, nil
}

func (l *ledgerLog) Checkpoint(ctx context.Context) ([]byte, error) {
	_, signed, err := l.signed(ctx)
	return signed, err
}

// signed returns the tree's size and a checkpoint signed for it.
func (l *ledgerLog) signed(ctx context.Context) (uint64, []byte, error) {
	size := l.tree.Size()
	root, err := l.tree.Root(ctx, size)
	if err != nil {
		return 0, nil, err
	}
	signed, err := l.signer.Sign(size, root)
	return size, signed, err
}

func (l *ledgerLog) WitnessedCheckpoint(context.Context) ([]byte, error) {
	if l.witnessed == nil {
		return nil, &domain.Error{Kind: domain.KindNotFound, Code: "no-witnesses",
			Detail: "this node has no witnesses: its checkpoints are signed by its own key only (GET /v1/ledger/checkpoint)"}
	}
	cp, ok := l.witnessed.Latest()
	if !ok {
		return nil, &domain.Error{Kind: domain.KindUnavailable, Code: "not-witnessed",
			Detail: "no checkpoint has been witnessed yet: the witnesses have not answered (see the server's log and caledger_witness_failures_total)"}
	}
	return cp.Note, nil
}

func (l *ledgerLog) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	p, err := l.tree.InclusionProof(ctx, index, size)
	return p, rangeError(err, l.tree.Size())
}

func (l *ledgerLog) ConsistencyProof(ctx context.Context, size1, size2 uint64) ([][]byte, error) {
	p, err := l.tree.ConsistencyProof(ctx, size1, size2)
	return p, rangeError(err, l.tree.Size())
}

func (l *ledgerLog) VerifierKey() string { return l.signer.VerifierKey() }

// proveWait bounds how long Prove waits for the tree to cover the events (it
// follows the ledger within about 100 ms, its pause, when it runs) and then for
// the witnesses to cosign a checkpoint that covers them.
const proveWait = 2 * time.Second

func (l *ledgerLog) Prove(ctx context.Context, stream, eventType string) ([]api.Evidence, error) {
	var out []api.Evidence
	for e, err := range l.store.ReadStream(ctx, stream, 1) {
		if err != nil {
			return nil, err
		}
		if e.Type != eventType {
			continue
		}
		b, err := domain.Encode(&e)
		if err != nil {
			return nil, err
		}
		out = append(out, api.Evidence{Position: e.Position, Canonical: b})
	}
	if len(out) == 0 {
		return nil, nil
	}
	wctx, cancel := context.WithTimeout(ctx, proveWait)
	defer cancel()
	if err := l.tree.WaitFor(wctx, out[len(out)-1].Position); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err() // the caller gave up, not the tree
		}
		return nil, &domain.Error{Kind: domain.KindUnavailable, Code: "tree-behind",
			Detail: fmt.Sprintf("the ledger's Merkle tree does not cover position %d yet", out[len(out)-1].Position), Err: err}
	}
	size, signed, err := l.proving(ctx, wctx, out[len(out)-1].Position)
	if err != nil {
		return nil, err
	}
	for i := range out {
		if out[i].Inclusion, err = l.tree.InclusionProof(ctx, out[i].Position-1, size); err != nil {
			return nil, err
		}
		out[i].Checkpoint = string(signed)
	}
	return out, nil
}

// proving returns the checkpoint that evidence up to position at is proved
// in: one the witnesses cosigned when the node has witnesses and they cosign
// before wait ends; else one that fewer than the quorum cosigned, if the last
// round got any; else one signed now by the node's key alone. A receipt asked
// for again later gets a witnessed one.
func (l *ledgerLog) proving(ctx, wait context.Context, at uint64) (uint64, []byte, error) {
	if l.witnessed != nil {
		cp, err := l.witnessed.WaitFor(wait, at)
		if err == nil {
			return cp.Size, cp.Note, nil
		}
		if ctx.Err() != nil {
			return 0, nil, ctx.Err()
		}
		l.logger.WarnContext(ctx, "erasure evidence in a checkpoint the quorum of witnesses has not cosigned", "err", err)
		if cp.Size >= at {
			return cp.Size, cp.Note, nil
		}
	}
	return l.signed(ctx)
}

// rangeError turns the tree's ErrRange into a 400 problem that says how big the
// log is; other errors pass unchanged.
func rangeError(err error, size uint64) error {
	if !errors.Is(err, tree.ErrRange) {
		return err
	}
	return &domain.Error{Kind: domain.KindInvalid, Code: "bad-range",
		Detail: fmt.Sprintf("the index and sizes must fit the log, which has %d leaves", size), Err: err}
}
