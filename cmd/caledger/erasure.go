package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/caledger/caledger/api"
	"github.com/caledger/caledger/crypto/checkpoint"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/projections/audit"
)

// maxReceipt bounds what is read of a receipt file: a receipt holds a few
// small events and proofs.
const maxReceipt = 1 << 20

func runVerifyErasure(_ context.Context, args []string, _ func(string) string, stdout, _ io.Writer) error {
	flags := flag.NewFlagSet("verify-erasure", flag.ContinueOnError)
	receiptPath := flags.String("receipt", "", "the erasure receipt `file`: the JSON of POST or GET /v1/subjects/{id}/erasure")
	vkeyPath := flags.String("vkey", "", "the ledger's verifier key `file`, obtained out of band (the server's data/ca/checkpoint.vkey)")
	wflags := addWitnessFlags(flags)
	setUsage(flags, "verify-erasure --receipt FILE --vkey FILE [--witness-vkey FILE ... [--witness-quorum N]]",
		`Verify, offline, that an erasure receipt's erasure is recorded in the ledger:
each subject.erased event it carries decodes, names the receipt's subject,
and is included (RFC 9162 proof) in a checkpoint signed with the verifier
key. Together they must cover what the receipt says was erased. This proves
the record of the erasure, not the destruction of the keys: the receipt's
status is the key vault's report. 'caledger audit' checks that nothing was
sealed under the erased keys afterwards.
With --witness-vkey, each checkpoint must also be cosigned by the witnesses:
then the erasure is recorded in the one log they saw, the log auditors who
trust them audit. See docs/ledger.md.`)
	if help, err := parseFlags(flags, args, stdout); help || err != nil {
		return err
	}
	if *receiptPath == "" || *vkeyPath == "" {
		return &usageError{msg: "verify-erasure: --receipt and --vkey are required (run 'caledger verify-erasure -h')"}
	}
	verifier, vkey, err := readVerifier(*vkeyPath)
	if err != nil {
		return fmt.Errorf("verify-erasure: %w", err)
	}
	witnesses, err := wflags.load(vkey)
	if err != nil {
		return prefixed("verify-erasure", err)
	}
	f, err := os.Open(*receiptPath)
	if err != nil {
		return fmt.Errorf("verify-erasure: %w", err)
	}
	defer f.Close()
	var receipt api.ErasureReceipt
	if err := json.NewDecoder(io.LimitReader(f, maxReceipt)).Decode(&receipt); err != nil {
		return fmt.Errorf("verify-erasure: %s is not an erasure receipt: %w", *receiptPath, err)
	}
	if !receipt.SubjectID.Valid() {
		return fmt.Errorf("verify-erasure: the receipt names no subject pseudonym")
	}
	if len(receipt.Evidence) == 0 {
		return errors.New("verify-erasure: the receipt carries no ledger evidence (the server's Merkle tree did not cover the erasure yet): fetch it again with GET /v1/subjects/{id}/erasure")
	}
	all, groups, seen := false, []string{}, map[uint64]bool{}
	for i, ev := range receipt.Evidence {
		if seen[ev.Position] {
			return fmt.Errorf("verify-erasure: evidence %d repeats position %d", i+1, ev.Position)
		}
		seen[ev.Position] = true
		e, cp, err := audit.VerifyEvidence(verifier, ev.Position, ev.Canonical, []byte(ev.Checkpoint), ev.Inclusion)
		if err != nil {
			return fmt.Errorf("verify-erasure: evidence %d: %w", i+1, err)
		}
		if e.Type != domain.TypeSubjectErased {
			return fmt.Errorf("verify-erasure: evidence %d is a %s event, not %s", i+1, audit.TypeName(e.Type), domain.TypeSubjectErased)
		}
		var p domain.SubjectErased
		if domain.UnmarshalPublic(&e, &p) != nil {
			return fmt.Errorf("verify-erasure: evidence %d: the public part of its %s event cannot be read", i+1, domain.TypeSubjectErased)
		}
		if p.SubjectID != receipt.SubjectID || e.Stream != domain.SubjectStream(p.SubjectID) {
			return fmt.Errorf("verify-erasure: evidence %d erases another subject than the receipt's", i+1)
		}
		what := "all key groups"
		if len(p.KeyGroups) == 0 {
			all = true
		} else {
			// Signed, but still server-chosen text for a terminal.
			what = "key groups " + printable(strings.Join(p.KeyGroups, ", "))
			groups = append(groups, p.KeyGroups...)
		}
		var cosigs []checkpoint.Cosignature
		if witnesses != nil {
			if _, cosigs, err = witnesses.Verify([]byte(ev.Checkpoint), verifier); err != nil {
				return fmt.Errorf("verify-erasure: evidence %d: %w (if the server has these witnesses, a receipt fetched again with GET /v1/subjects/{id}/erasure may carry a checkpoint they cosigned since)", i+1, err)
			}
		}
		fmt.Fprintf(stdout, "position %d, %s: erasure of %s of subject %s, basis %s, by %s\n  in %s of %d events: checkpoint signature and inclusion proof verified\n",
			e.Position, e.Time.Format(time.RFC3339), what, p.SubjectID, printable(p.Basis), audit.RoleName(e.Actor.Role), cp.Origin, cp.Size)
		if witnesses != nil {
			fmt.Fprintf(stdout, "  witnessed by %s\n", cosigners(cosigs))
		}
	}
	// The evidence must cover the receipt's claim.
	if !all {
		if len(receipt.KeyGroups) == 0 {
			return errors.New("verify-erasure: the receipt claims the whole subject erased, but the evidence erases only some key groups")
		}
		for _, g := range receipt.KeyGroups {
			if !slices.Contains(groups, g) {
				return fmt.Errorf("verify-erasure: the receipt claims key group %q erased, but no evidence erases it", g)
			}
		}
	}
	fmt.Fprintf(stdout, "OK: the ledger records the erasure of subject %s. The key vault reports %q; the ledger proves the record, not the destruction of the keys.\n",
		receipt.SubjectID, printable(receipt.Status))
	return nil
}
