package sharedvault

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tink-crypto/tink-go/v2/keyset"

	"github.com/caledger/caledger/crypto/datakey"
	"github.com/caledger/caledger/domain"
)

// Errors. Seal and Open errors for a (subject, group) wrap at most one of them.
var (
	// ErrShredded is matched by Seal and Open errors for a destroyed data key.
	ErrShredded = domain.ErrShredded
	// ErrNoKey is matched by Open errors for a (subject, group) that never had a key.
	ErrNoKey = errors.New("sharedvault: no data key")
	// ErrInvalidCiphertext is matched by Open errors for a ciphertext that does not
	// authenticate: tampered, sealed with other associated data, or under another key.
	ErrInvalidCiphertext = errors.New("sharedvault: ciphertext does not authenticate")
	// ErrWrongKEK is matched when the keyring gives, for an epoch, a KEK whose ID is
	// not the one recorded when the epoch started, or Rotate is given the KEK of an
	// earlier epoch.
	ErrWrongKEK = errors.New("sharedvault: KEK is not the epoch's")
	// ErrEpochRetired is matched by errors that need a retired or destroyed epoch's
	// KEK, and by RetireEpoch for an epoch that cannot be retired.
	ErrEpochRetired = errors.New("sharedvault: epoch retired")
	// ErrNotDestroyable is matched by DestroyEpoch errors when the keyring's KEK is
	// not a Destroyer.
	ErrNotDestroyable = errors.New("sharedvault: KEK cannot destroy itself")
	// ErrClosed is matched by errors from a closed Vault.
	ErrClosed = errors.New("sharedvault: vault is closed")
)

// Store is the part of eventstore.Store the vault uses. Every eventstore.Store
// satisfies it. Reads MUST see every append that returned before they started
// (KurrentDB: read from the leader).
type Store interface {
	Append(ctx context.Context, stream string, expected domain.Expected, events ...domain.Event) (domain.Appended, error)
	ReadStream(ctx context.Context, stream string, from uint64) iter.Seq2[domain.Event, error]
	ReadAll(ctx context.Context, from uint64) iter.Seq2[domain.Event, error]
	Follow(ctx context.Context, from uint64) iter.Seq2[domain.Event, error]
	Head(ctx context.Context) (uint64, error)
}

// DefaultCacheSize is how many unwrapped data keys a Vault keeps by default.
const DefaultCacheSize = 10_000

// DefaultCacheTTL is how long a cached key is trusted by default. An uncached
// Open reads the subject's key stream (about 40 µs on the embedded store) and
// unwraps the key under its epoch's KEK (with a PKCS#11 KEK, an HSM call).
const DefaultCacheTTL = 10 * time.Second

// maxAttempts bounds the retries of an append that lost an optimistic-concurrency
// race on a key or epoch stream; each retry re-reads the stream.
const maxAttempts = 32

// Options configure New. The zero value is the default.
type Options struct {
	// CacheTTL bounds how long a cached key is used without reading its stream
	// again (0: DefaultCacheTTL). Run evicts a key as soon as it hears of its
	// tombstone; the TTL bounds the window when it cannot hear, for instance
	// while a store's subscription silently reconnects.
	CacheTTL time.Duration
	// CacheSize bounds the cache of unwrapped data keys (0: DefaultCacheSize;
	// negative: no cache). The cache is used only while Run is running.
	CacheSize int
	// Now timestamps vault events (default time.Now).
	Now func() time.Time
	// Rand makes event ids (default crypto/rand.Reader). Data keys always come from
	// Tink's own source.
	Rand io.Reader
	// Actor is recorded on every vault event (default ID "caledger-vault", role
	// "system"); a node name is a good ID.
	Actor domain.Actor
	// Logger receives Run's warnings (default: discarded). Nothing logged holds key
	// material or plaintext.
	Logger *slog.Logger
}

// Vault is a domain.Sealer whose data keys live, wrapped by epoch KEKs, in the
// streams of a Store shared by several nodes. It is safe for concurrent use. See the
// package documentation for the protocol.
type Vault struct {
	store   Store
	keyring Keyring
	now     func() time.Time
	rand    io.Reader
	actor   domain.Actor
	log     *slog.Logger
	cache   *datakey.Cache

	mu   sync.Mutex // guards ep and keks
	ep   epochs
	keks map[uint32]KEK // resolved KEKs of epochs not retired

	running atomic.Bool
	seen    atomic.Uint64 // the last position Run has handled
	life    context.Context
	stop    context.CancelFunc
	closed  atomic.Bool
}

var _ domain.Sealer = (*Vault)(nil)

// New returns a vault over store. It reads the epoch stream and, on an empty one,
// starts epoch 1 with keyring's KEK for it; it checks that the keyring's KEK of the
// current epoch is the recorded one (ErrWrongKEK). Call Run to keep a cache and hear
// of other nodes' tombstones; Close when done. New neither closes nor owns store
// and keyring.
func New(ctx context.Context, store Store, keyring Keyring, opts Options) (*Vault, error) {
	if store == nil || keyring == nil {
		return nil, errors.New("sharedvault: a store and a keyring are required")
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = DefaultCacheTTL
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if opts.Actor == (domain.Actor{}) {
		opts.Actor = domain.Actor{ID: "caledger-vault", Role: "system"}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	v := &Vault{store: store, keyring: keyring, now: opts.Now, rand: opts.Rand, actor: opts.Actor,
		log: opts.Logger, cache: datakey.NewCache(opts.CacheSize, opts.CacheTTL, opts.Now), keks: map[uint32]KEK{}}
	// The cache is off until Run follows the store: only a node that hears of
	// tombstones may keep keys.
	v.cache.SetEnabled(false)
	v.life, v.stop = context.WithCancel(context.Background())
	if err := v.refreshEpochs(ctx); err != nil {
		return nil, err
	}
	if v.current() == 0 {
		if err := v.startFirstEpoch(ctx); err != nil {
			return nil, err
		}
	}
	if _, err := v.kekFor(ctx, v.current()); err != nil {
		return nil, err
	}
	return v, nil
}

func (v *Vault) startFirstEpoch(ctx context.Context) error {
	k, err := v.keyring.KEK(ctx, 1)
	if err != nil {
		return fmt.Errorf("sharedvault: KEK of epoch 1: %w", err)
	}
	ev, err := v.event(TypeEpochStarted, epochPayload{Epoch: 1, KEK: k.ID()})
	if err != nil {
		return err
	}
	_, err = v.store.Append(ctx, epochStream, domain.NoStream, ev)
	if err != nil && !errors.Is(err, domain.ErrWrongVersion) {
		return fmt.Errorf("sharedvault: start epoch 1: %w", err)
	}
	// Another node may have started it first, with a KEK that kekFor will compare.
	return v.refreshEpochs(ctx)
}

// Close stops Run and drops the cached keys. Later calls fail with ErrClosed. It
// closes neither the store nor the keyring.
func (v *Vault) Close() error {
	v.closed.Store(true)
	v.stop()
	v.cache.SetEnabled(false)
	return nil
}

// Seal encrypts plaintext under the data key of (subject, group) with ad as associated
// data, creating the key if it has none: the wrapped key is durable in the store
// before Seal returns. Concurrent first Seals on any nodes agree on one key. Seal
// fails with an error matching ErrShredded once the key's tombstone is in the store,
// except that a node may still use a key it has cached until Run hears of the
// tombstone (see the package documentation).
func (v *Vault) Seal(ctx context.Context, subject domain.SubjectID, group string, plaintext, ad []byte) (domain.Sealed, error) {
	if err := checkNames(subject, group); err != nil {
		return domain.Sealed{}, err
	}
	if err := v.usable(ctx); err != nil {
		return domain.Sealed{}, err
	}
	k, err := v.dataKey(ctx, subject, group, true)
	if err != nil {
		return domain.Sealed{}, err
	}
	sealed, err := k.Seal(subject, group, plaintext, ad)
	if err != nil {
		return domain.Sealed{}, fmt.Errorf("sharedvault: subject %s group %s: encrypt: %w", subject, group, err)
	}
	return sealed, nil
}

// Open decrypts s with ad. It fails with an error matching ErrShredded if the key's
// tombstone is in the store (with the caveat of Seal for cached keys), ErrNoKey if
// (s.SubjectID, s.KeyGroup) never had a key, and ErrInvalidCiphertext if s does not
// authenticate with exactly ad. It returns plaintext only on success.
func (v *Vault) Open(ctx context.Context, s *domain.Sealed, ad []byte) ([]byte, error) {
	if s == nil {
		return nil, errors.New("sharedvault: nil sealed part")
	}
	if err := checkNames(s.SubjectID, s.KeyGroup); err != nil {
		return nil, err
	}
	if !datakey.PrefixMatches(s) {
		return nil, fmt.Errorf("sharedvault: subject %s group %s: %w", s.SubjectID, s.KeyGroup, ErrInvalidCiphertext)
	}
	if err := v.usable(ctx); err != nil {
		return nil, err
	}
	k, err := v.dataKey(ctx, s.SubjectID, s.KeyGroup, false)
	if err != nil {
		return nil, err
	}
	pt, ok := k.Open(s, ad)
	if !ok {
		return nil, fmt.Errorf("sharedvault: subject %s group %s: %w", s.SubjectID, s.KeyGroup, ErrInvalidCiphertext)
	}
	return pt, nil
}

// Shred records the destruction of subject's data keys: those of groups, or every
// group (including groups that get no key until later) when groups is empty. It
// appends a tombstone to the subject's key stream, evicts the keys from this node's
// cache and returns once the tombstone is durable.
//
// Shred returning nil means the erasure is recorded: every node refuses the keys
// once it has seen the tombstone (at once for keys it has not cached). The wrapped
// keys stay in the store, its replicas and backups until every epoch KEK that
// wrapped them is destroyed; ErasureStatus says when that is. Shred is idempotent.
func (v *Vault) Shred(ctx context.Context, subject domain.SubjectID, groups ...string) error {
	if !validSubject(subject) {
		return errBadSubject
	}
	for _, g := range groups {
		if !datakey.ValidGroup(g) {
			return errBadGroup
		}
	}
	if err := v.usable(ctx); err != nil {
		return err
	}
	// Evicted whatever happens below, and after the append, so that a load that read
	// the stream before the tombstone cannot cache the key (cache.gen).
	defer v.cache.Evict(subject, groups)

	// A corrupt stream does not stop an erasure: the tombstone goes after whatever
	// is there (and Open keeps failing closed on it).
	st, err := v.readKeys(ctx, subject)
	if errors.Is(err, ErrCorrupt) {
		st = subjectKeys{}
	} else if err != nil {
		return err
	}
	want := []string{"*"}
	if len(groups) > 0 {
		want = want[:0]
		for _, g := range groups {
			if !st.shredded(g) && !slices.Contains(want, g) {
				want = append(want, g)
			}
		}
		if len(want) == 0 {
			return nil
		}
		slices.Sort(want)
	} else if !st.all.IsZero() {
		return nil
	}
	ev, err := v.event(TypeKeysShredded, shredPayload{Groups: want})
	if err != nil {
		return err
	}
	// Any: a tombstone depends on nothing before it. A key creation racing with it
	// appends at an exact version, so it fails and re-reads the tombstone.
	if _, err := v.store.Append(ctx, KeyStream(subject), domain.Any, ev); err != nil {
		return fmt.Errorf("sharedvault: shred subject %s: %w", subject, err)
	}
	return nil
}

func (v *Vault) usable(ctx context.Context) error {
	if v.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// dataKey returns the key of (subject, group), from the cache or the store,
// creating it if create is set.
func (v *Vault) dataKey(ctx context.Context, subject domain.SubjectID, group string, create bool) (datakey.Key, error) {
	ck := datakey.CacheKey{Subject: subject, Group: group}
	if k, ok := v.cache.Get(ck); ok {
		return k, nil
	}
	gen := v.cache.Generation()
	k, err := v.load(ctx, subject, group, create)
	if err != nil {
		return datakey.Key{}, err
	}
	v.cache.Add(ck, k, gen)
	return k, nil
}

// load reads the subject's key stream and unwraps the group's key, or creates it.
//
// Before a key is used, settle checks, with a fresh read of the epoch stream, that
// the epoch wrapping it is not retiring; otherwise it re-wraps the key under the
// current epoch from memory. That is what lets RetireEpoch trust its sweep: a key
// used by anyone was either in the store before the epoch started retiring (and
// the sweep sees it) or moved off it by its user.
func (v *Vault) load(ctx context.Context, subject domain.SubjectID, group string, create bool) (datakey.Key, error) {
	for range maxAttempts {
		st, err := v.readKeys(ctx, subject)
		if err != nil {
			return datakey.Key{}, err
		}
		if st.shredded(group) {
			return datakey.Key{}, fmt.Errorf("sharedvault: subject %s group %s: %w", subject, group, ErrShredded)
		}
		if g := st.groups[group]; g != nil {
			h, k, err := v.unwrap(ctx, subject, group, g)
			if err == nil {
				if err := v.settle(ctx, subject, map[string]*keyset.Handle{group: h}, g.epoch); err != nil {
					return datakey.Key{}, err
				}
				return k, nil
			}
			// A key whose only wrap is under a retired epoch was created after the
			// epoch started retiring by a node that stopped before moving it: it
			// was never used (see settle), so Seal replaces it.
			if !create || !errors.Is(err, ErrEpochRetired) {
				return datakey.Key{}, fmt.Errorf("sharedvault: subject %s group %s: %w", subject, group, err)
			}
		} else if !create {
			return datakey.Key{}, fmt.Errorf("sharedvault: subject %s group %s: %w", subject, group, ErrNoKey)
		}
		k, err := v.create(ctx, subject, group, st.version)
		if errors.Is(err, domain.ErrWrongVersion) {
			continue // another node changed the stream: re-read it
		}
		return k, err
	}
	return datakey.Key{}, fmt.Errorf("sharedvault: subject %s group %s: the key stream kept changing; try again", subject, group)
}

// create makes a key, wraps it under the current epoch and appends it at exactly
// version: if anything reached the stream meanwhile (another node's key for the
// group, a tombstone) the append fails with ErrWrongVersion and load re-reads.
func (v *Vault) create(ctx context.Context, subject domain.SubjectID, group string, version uint64) (datakey.Key, error) {
	h, k, err := datakey.New()
	if err != nil {
		return datakey.Key{}, fmt.Errorf("sharedvault: %w", err)
	}
	ep, wrapped, err := v.wrapCurrent(ctx, h, subject, group)
	if err != nil {
		return datakey.Key{}, err
	}
	ev, err := v.event(TypeKeyCreated, keyPayload{Group: group, Epoch: ep, KeyID: k.ID(), Wrapped: wrapped})
	if err != nil {
		return datakey.Key{}, err
	}
	if _, err := v.store.Append(ctx, KeyStream(subject), domain.Exact(version), ev); err != nil {
		return datakey.Key{}, fmt.Errorf("sharedvault: subject %s group %s: store key: %w", subject, group, err)
	}
	if err := v.settle(ctx, subject, map[string]*keyset.Handle{group: h}, ep); err != nil {
		return datakey.Key{}, err
	}
	return k, nil
}

// wrapCurrent wraps h under the current epoch as this node knows it. If that fails
// and the epoch stream has moved on (this node's view was stale and the KEK is
// already gone), it tries again under the new current epoch.
func (v *Vault) wrapCurrent(ctx context.Context, h *keyset.Handle, subject domain.SubjectID, group string) (uint32, []byte, error) {
	ep := v.current()
	kek, err := v.kekFor(ctx, ep)
	var wrapped []byte
	if err == nil {
		wrapped, err = wrapKey(ctx, h, kek, subject, group, ep)
	}
	if err == nil {
		return ep, wrapped, nil
	}
	if rerr := v.refreshEpochs(ctx); rerr != nil || v.current() == ep {
		return 0, nil, err
	}
	ep = v.current()
	if kek, err = v.kekFor(ctx, ep); err != nil {
		return 0, nil, err
	}
	wrapped, err = wrapKey(ctx, h, kek, subject, group, ep)
	return ep, wrapped, err
}

// settle makes sure that the keys in hs (by group), last wrapped under epoch ep, are
// not left wrapped only under an epoch that is retiring or past it: it reads the
// epoch stream afresh and, while one is, re-wraps it from memory under the current
// epoch. Keys the stream no longer has (shredded, replaced) are left alone. The
// usual case costs one read of the epoch stream's (empty) tail.
func (v *Vault) settle(ctx context.Context, subject domain.SubjectID, hs map[string]*keyset.Handle, ep uint32) error {
	if err := v.refreshEpochs(ctx); err != nil {
		return err
	}
	if v.phase(ep) < phaseRetiring {
		return nil
	}
	for range maxAttempts {
		st, err := v.readKeys(ctx, subject)
		if err != nil {
			return err
		}
		move := map[string]*keyset.Handle{}
		for group, h := range hs {
			if g := st.live(group); g != nil && g.keyID == primaryID(h) && v.phase(g.epoch) >= phaseRetiring {
				move[group] = h
			}
		}
		if len(move) == 0 {
			return nil
		}
		if _, err := v.appendWraps(ctx, subject, st.version, move); err != nil && !errors.Is(err, domain.ErrWrongVersion) {
			return err
		}
		if err := v.refreshEpochs(ctx); err != nil {
			return err
		}
	}
	return fmt.Errorf("sharedvault: subject %s: epochs kept changing while moving keys off a retiring epoch", subject)
}

// appendWraps appends a re-wrap of each key in hs under the current epoch, in one
// append at exactly version, and returns that epoch.
func (v *Vault) appendWraps(ctx context.Context, subject domain.SubjectID, version uint64, hs map[string]*keyset.Handle) (uint32, error) {
	ep := v.current()
	kek, err := v.kekFor(ctx, ep)
	if err != nil {
		return 0, err
	}
	groups := make([]string, 0, len(hs))
	for g := range hs {
		groups = append(groups, g)
	}
	slices.Sort(groups)
	evs := make([]domain.Event, 0, len(groups))
	for _, group := range groups {
		h := hs[group]
		wrapped, err := wrapKey(ctx, h, kek, subject, group, ep)
		if err != nil {
			return 0, err
		}
		ev, err := v.event(TypeKeyRewrapped, keyPayload{Group: group, Epoch: ep, KeyID: primaryID(h), Wrapped: wrapped})
		if err != nil {
			return 0, err
		}
		evs = append(evs, ev)
	}
	if _, err := v.store.Append(ctx, KeyStream(subject), domain.Exact(version), evs...); err != nil {
		return 0, fmt.Errorf("sharedvault: subject %s: store re-wrapped keys: %w", subject, err)
	}
	return ep, nil
}

// unwrap unwraps g's latest wrap. It fails with ErrEpochRetired if that epoch is
// retired or destroyed.
func (v *Vault) unwrap(ctx context.Context, subject domain.SubjectID, group string, g *groupKey) (*keyset.Handle, datakey.Key, error) {
	kek, err := v.kekFor(ctx, g.epoch)
	if err != nil {
		return nil, datakey.Key{}, err
	}
	h, err := datakey.Unwrap(ctx, g.wrapped, kek, wrapAD(subject, group, g.epoch))
	if err != nil {
		// The epoch may have been retired and its KEK destroyed since this node
		// last looked.
		if rerr := v.refreshEpochs(ctx); rerr == nil && v.phase(g.epoch) >= phaseRetired {
			return nil, datakey.Key{}, fmt.Errorf("epoch %d: %w", g.epoch, ErrEpochRetired)
		}
		return nil, datakey.Key{}, fmt.Errorf("unwrap key (epoch %d): %w", g.epoch, err)
	}
	k, err := datakey.FromHandle(h)
	if err != nil {
		return nil, datakey.Key{}, err
	}
	if k.ID() != g.keyID {
		return nil, datakey.Key{}, fmt.Errorf("%w: the wrapped key's id is not the recorded one", ErrCorrupt)
	}
	return h, k, nil
}

func wrapKey(ctx context.Context, h *keyset.Handle, kek KEK, subject domain.SubjectID, group string, epoch uint32) ([]byte, error) {
	wrapped, err := datakey.Wrap(ctx, h, kek, wrapAD(subject, group, epoch))
	if err != nil {
		return nil, fmt.Errorf("sharedvault: subject %s group %s: wrap key (epoch %d): %w", subject, group, epoch, err)
	}
	return wrapped, nil
}

func primaryID(h *keyset.Handle) uint32 {
	e, err := h.Primary()
	if err != nil {
		return 0
	}
	return e.KeyID()
}

// readKeys reads and folds subject's key stream.
func (v *Vault) readKeys(ctx context.Context, subject domain.SubjectID) (subjectKeys, error) {
	var st subjectKeys
	for e, err := range v.store.ReadStream(ctx, KeyStream(subject), 1) {
		if err != nil {
			return st, fmt.Errorf("sharedvault: read keys of subject %s: %w", subject, err)
		}
		if err := st.apply(&e); err != nil {
			return st, err
		}
	}
	return st, nil
}

// event builds a vault event; the store assigns its stream version.
func (v *Vault) event(typ string, payload any) (domain.Event, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return domain.Event{}, fmt.Errorf("sharedvault: encode %s: %w", typ, err)
	}
	id, err := domain.NewEventID(v.rand)
	if err != nil {
		return domain.Event{}, fmt.Errorf("sharedvault: %w", err)
	}
	return domain.Event{ID: id, Type: typ, Schema: schema, Time: v.now().UTC(), Actor: v.actor, Public: b}, nil
}

var (
	errBadSubject = errors.New("sharedvault: subject id is empty, too long or not printable ASCII")
	errBadGroup   = errors.New("sharedvault: key group is empty, \"*\", too long or not printable ASCII")
)

// checkNames applies the domain's rules for names in sealed parts. Errors do not
// quote a rejected name: it is not known to be a pseudonym.
func checkNames(subject domain.SubjectID, group string) error {
	if !validSubject(subject) {
		return errBadSubject
	}
	if !datakey.ValidGroup(group) {
		return errBadGroup
	}
	return nil
}
