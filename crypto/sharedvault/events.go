package sharedvault

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/caledger/caledger/crypto/datakey"
	"github.com/caledger/caledger/domain"
)

// Streams. Key streams are "vault-<subject>"; the one epoch stream is "vault.epochs",
// which no subject id can collide with. Neither is a domain stream: the domain never
// reads them, and projections skip their event types.
const (
	keyStreamPrefix = "vault-"
	epochStream     = "vault.epochs"
)

// KeyStream names the stream of subject's wrapped data keys and tombstones.
func KeyStream(subject domain.SubjectID) string { return keyStreamPrefix + string(subject) }

// Event types. They are not domain catalogue events and live only in the streams
// above. Payloads are JSON in the event's public part; a wrapped keyset is not
// personal data, and is useless without its epoch's KEK.
const (
	TypeKeyCreated     = "vault.key-created"     // keyPayload: a new data key
	TypeKeyRewrapped   = "vault.key-rewrapped"   // keyPayload: the same key under a later epoch
	TypeKeysShredded   = "vault.keys-shredded"   // shredPayload: a tombstone
	TypeEpochStarted   = "vault.epoch-started"   // epochPayload with kek: new wraps use it
	TypeEpochRetiring  = "vault.epoch-retiring"  // epochPayload: no new wraps under it
	TypeEpochRetired   = "vault.epoch-retired"   // epochPayload: no surviving key needs it
	TypeEpochDestroyed = "vault.epoch-destroyed" // epochPayload: its KEK is destroyed
)

// schema is the payload layout version of every vault event type.
const schema = 1

type keyPayload struct {
	Group string `json:"group"`
	Epoch uint32 `json:"epoch"`
	// KeyID is the keyset's primary key id: public anyway, as the 4 bytes after the
	// first of every ciphertext under it.
	KeyID   uint32 `json:"key_id"`
	Wrapped []byte `json:"wrapped"`
}

type shredPayload struct {
	// Groups are the shredded key groups; ["*"] is every group, now and later.
	Groups []string `json:"groups"`
}

type epochPayload struct {
	Epoch uint32 `json:"epoch"`
	KEK   string `json:"kek,omitempty"`
}

// maxWrapped bounds a wrapped keyset: one AES-256 key is about 150 bytes.
const maxWrapped = 4096

// ErrCorrupt is matched by errors for a vault stream that does not decode or breaks
// the vault's rules (a key created after its tombstone, an epoch out of order). The
// vault fails closed on it: it never skips a vault event it does not understand,
// because that event might be a tombstone.
var ErrCorrupt = errors.New("sharedvault: vault stream is corrupt")

func corrupt(e *domain.Event, format string, args ...any) error {
	return fmt.Errorf("%w: %s version %d (position %d): %s", ErrCorrupt, e.Stream, e.Version, e.Position, fmt.Sprintf(format, args...))
}

// decodeStrict decodes a payload, refusing unknown fields and trailing data.
func decodeStrict(e *domain.Event, v any) error {
	if e.Schema != schema {
		return corrupt(e, "%s schema %d, this program knows %d", e.Type, e.Schema, schema)
	}
	if e.Sealed != nil {
		return corrupt(e, "vault events have no sealed part")
	}
	d := json.NewDecoder(bytes.NewReader(e.Public))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		// The JSON error is not passed on: it may quote the payload.
		return corrupt(e, "%s payload does not decode", e.Type)
	}
	if d.More() {
		return corrupt(e, "%s payload has trailing data", e.Type)
	}
	return nil
}

func decodeKey(e *domain.Event) (keyPayload, error) {
	var p keyPayload
	if err := decodeStrict(e, &p); err != nil {
		return p, err
	}
	if !datakey.ValidGroup(p.Group) || p.Epoch == 0 || len(p.Wrapped) == 0 || len(p.Wrapped) > maxWrapped {
		return p, corrupt(e, "%s payload has a bad group, epoch or wrapped key", e.Type)
	}
	return p, nil
}

func decodeShred(e *domain.Event) (shredPayload, error) {
	var p shredPayload
	if err := decodeStrict(e, &p); err != nil {
		return p, err
	}
	if len(p.Groups) == 0 {
		return p, corrupt(e, "tombstone names no group")
	}
	for _, g := range p.Groups {
		if !(datakey.ValidGroup(g) || g == "*" && len(p.Groups) == 1) {
			return p, corrupt(e, "tombstone has a bad group")
		}
	}
	return p, nil
}

func decodeEpoch(e *domain.Event) (epochPayload, error) {
	var p epochPayload
	if err := decodeStrict(e, &p); err != nil {
		return p, err
	}
	if p.Epoch == 0 || (p.KEK != "") != (e.Type == TypeEpochStarted) || len(p.KEK) > domain.MaxNameLen {
		return p, corrupt(e, "%s payload has a bad epoch or KEK id", e.Type)
	}
	return p, nil
}

// groupKey is what a key stream says about one key group.
type groupKey struct {
	keyID uint32
	// epoch and wrapped are the latest wrap of the key; wrapped is nil once shredded.
	epoch   uint32
	wrapped []byte
	// epochs lists every epoch that wrapped any key this group ever had, in order:
	// the KEKs that must be destroyed before an erasure of the group is complete.
	epochs []uint32
	// shredded is when the group's tombstone was appended; zero while it is live.
	shredded time.Time
}

// subjectKeys is a subject's key stream, folded.
type subjectKeys struct {
	version uint64
	groups  map[string]*groupKey
	// all is when a tombstone for every group was appended; zero if none was.
	all time.Time
	// tombstones are the shredded groups ("*": all) with the time of their first
	// tombstone, in that order.
	tombstones []tombstone
}

type tombstone struct {
	group string
	at    time.Time
}

// shredded reports whether group's key is destroyed (or may never be created).
func (s *subjectKeys) shredded(group string) bool {
	if !s.all.IsZero() {
		return true
	}
	g := s.groups[group]
	return g != nil && !g.shredded.IsZero()
}

// live returns group's key if it has one that is not shredded.
func (s *subjectKeys) live(group string) *groupKey {
	if s.shredded(group) {
		return nil
	}
	return s.groups[group]
}

// apply folds one event of the subject's key stream into s. Events must come in
// version order.
func (s *subjectKeys) apply(e *domain.Event) error {
	if e.Version != s.version+1 {
		return corrupt(e, "expected version %d", s.version+1)
	}
	if s.groups == nil {
		s.groups = map[string]*groupKey{}
	}
	switch e.Type {
	case TypeKeyCreated, TypeKeyRewrapped:
		p, err := decodeKey(e)
		if err != nil {
			return err
		}
		if s.shredded(p.Group) {
			return corrupt(e, "%s after the group's tombstone", e.Type)
		}
		g := s.groups[p.Group]
		if e.Type == TypeKeyRewrapped && (g == nil || g.keyID != p.KeyID) {
			return corrupt(e, "re-wrap of a key the stream does not have")
		}
		// A key-created for a group that has a key replaces an orphan (see
		// Vault.load); the earlier key's epochs still count.
		if g == nil {
			g = &groupKey{}
			s.groups[p.Group] = g
		}
		g.keyID, g.epoch, g.wrapped = p.KeyID, p.Epoch, p.Wrapped
		if !slices.Contains(g.epochs, p.Epoch) {
			g.epochs = append(g.epochs, p.Epoch)
		}
	case TypeKeysShredded:
		p, err := decodeShred(e)
		if err != nil {
			return err
		}
		for _, name := range p.Groups {
			s.recordTombstone(name, e.Time)
			if name == "*" {
				if s.all.IsZero() {
					s.all = e.Time
				}
				for _, g := range s.groups {
					g.shred(e.Time)
				}
				continue
			}
			g := s.groups[name]
			if g == nil {
				g = &groupKey{}
				s.groups[name] = g
			}
			g.shred(e.Time)
		}
	default:
		return corrupt(e, "unknown vault event type %q", e.Type)
	}
	s.version = e.Version
	return nil
}

func (g *groupKey) shred(at time.Time) {
	if g.shredded.IsZero() {
		g.shredded = at
	}
	g.wrapped = nil
}

func (s *subjectKeys) recordTombstone(group string, at time.Time) {
	for _, t := range s.tombstones {
		if t.group == group {
			return // the erasure was recorded by the first one
		}
	}
	s.tombstones = append(s.tombstones, tombstone{group, at})
}

// phase is where an epoch is in its life. The order matters: later phases compare
// greater.
type phase int

const (
	phaseUnknown    phase = iota
	phaseCurrent          // the newest epoch: new wraps use it
	phaseSuperseded       // a newer epoch started; its wraps are still used
	phaseRetiring         // no new wraps; a sweep is moving keys off it
	phaseRetired          // no surviving key needs it; its KEK may be destroyed
	phaseDestroyed        // its KEK is destroyed
)

func (p phase) String() string {
	switch p {
	case phaseCurrent:
		return "current"
	case phaseSuperseded:
		return "superseded"
	case phaseRetiring:
		return "retiring"
	case phaseRetired:
		return "retired"
	case phaseDestroyed:
		return "destroyed"
	}
	return "unknown"
}

type epochInfo struct {
	kekID                        string
	retiring, retired, destroyed time.Time
}

// epochs is the epoch stream, folded.
type epochs struct {
	version uint64
	list    []epochInfo // epoch n is list[n-1]
}

func (s *epochs) current() uint32 { return uint32(len(s.list)) }

func (s *epochs) info(n uint32) (epochInfo, bool) {
	if n == 0 || n > uint32(len(s.list)) {
		return epochInfo{}, false
	}
	return s.list[n-1], true
}

func (s *epochs) phase(n uint32) phase {
	i, ok := s.info(n)
	switch {
	case !ok:
		return phaseUnknown
	case !i.destroyed.IsZero():
		return phaseDestroyed
	case !i.retired.IsZero():
		return phaseRetired
	case !i.retiring.IsZero():
		return phaseRetiring
	case n == s.current():
		return phaseCurrent
	}
	return phaseSuperseded
}

// apply folds one event of the epoch stream into s. An event at or below s.version
// was applied already and is ignored, so that Run and fresh reads can both feed it.
func (s *epochs) apply(e *domain.Event) error {
	if e.Version <= s.version {
		return nil
	}
	if e.Version != s.version+1 {
		return corrupt(e, "expected version %d", s.version+1)
	}
	switch e.Type {
	case TypeEpochStarted, TypeEpochRetiring, TypeEpochRetired, TypeEpochDestroyed:
	default:
		return corrupt(e, "unknown vault event type %q", e.Type)
	}
	p, err := decodeEpoch(e)
	if err != nil {
		return err
	}
	if e.Type == TypeEpochStarted {
		if p.Epoch != s.current()+1 {
			return corrupt(e, "epoch %d started after epoch %d", p.Epoch, s.current())
		}
		for _, i := range s.list {
			if i.kekID == p.KEK {
				return corrupt(e, "epoch %d reuses the KEK of an earlier epoch", p.Epoch)
			}
		}
		s.list = append(s.list, epochInfo{kekID: p.KEK})
		s.version = e.Version
		return nil
	}
	ph := s.phase(p.Epoch)
	if ph == phaseUnknown {
		return corrupt(e, "%s for epoch %d, which never started", e.Type, p.Epoch)
	}
	i := &s.list[p.Epoch-1]
	switch {
	case e.Type == TypeEpochRetiring && ph == phaseSuperseded:
		i.retiring = e.Time
	case e.Type == TypeEpochRetired && ph == phaseRetiring:
		i.retired = e.Time
	case e.Type == TypeEpochDestroyed && ph == phaseRetired:
		i.destroyed = e.Time
	default:
		return corrupt(e, "%s for epoch %d, which is %v", e.Type, p.Epoch, ph)
	}
	s.version = e.Version
	return nil
}

// validSubject also leaves room for the stream prefix within domain.MaxNameLen.
func validSubject(s domain.SubjectID) bool {
	return datakey.Printable(string(s), domain.MaxNameLen-len(keyStreamPrefix))
}

// subjectOf returns the subject of a key stream name.
func subjectOf(stream string) (domain.SubjectID, bool) {
	s, ok := strings.CutPrefix(stream, keyStreamPrefix)
	return domain.SubjectID(s), ok && s != ""
}
