// Package tree keeps the ledger's Merkle tree: an RFC 6962 (RFC 9162) log
// whose leaf i is the event at ledger position i+1, hashed as
// rfc6962.DefaultHasher.HashLeaf(domain.Encode(&event)), the event's canonical
// bytes with its position and version.
//
// The tree is derived data, like the views in package projections: it lives in
// a SQLite file of its own, follows the ledger from its own size, and can be
// deleted and rebuilt from the ledger at any time.
//
// # Storage
//
// The file holds every node the tree has completed (leaves included) in the
// table nodes, keyed by (level, index) as in compact.NodeID, and in the single
// row of meta the number of leaves and the root hash of that tree. A node never
// changes once written. Run writes the nodes of a batch of leaves and the new
// size in one transaction, so the size never names a leaf whose nodes are
// missing. The file is opened with synchronous=NORMAL: a power loss may undo the
// last commits, which the next Run appends again from the ledger. Open rebuilds
// the in-memory compact range of the tree from the stored nodes and checks them
// against the stored root.
//
// Root hashes and proofs for any size up to Size are computed from the stored
// nodes (compact.RangeNodes, proof.Inclusion, proof.Consistency); the root of
// the current size is kept in memory.
//
// # The ledger
//
// When Run starts on a tree that is not empty it checks that the ledger's event
// at the tree's size has the leaf hash the tree holds for it, and that the
// ledger is not shorter than the tree: a ledger restored from an older backup,
// or another ledger, makes Run fail rather than grow a tree that no longer
// describes the ledger. The remedy is to delete the tree file, which Run then
// rebuilds. Run also fails, without skipping anything, when the ledger yields a
// position other than the next one.
package tree
