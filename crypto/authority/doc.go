// Package authority runs the certificate authorities of one caledger node: it
// loads each CA recorded in the ledger with its signing key, serves their CRLs
// (recorded in the ledger before they leave the process), answers OCSP lookups
// and authenticates client certificates from the revocations view.
//
// # CRLs
//
// A CA's CRL is cached with the revocation revision it was built from (the
// position of the CA's last revocation change in the revocations view). A
// request rebuilds it when that revision moved, or when half of the CRL's
// validity has passed; otherwise it gets the cached one. Since the views lag
// the ledger by well under 100 ms, a revocation is in the next CRL served
// within a second. Builds of one CA are serialised, so concurrent requests
// after a revocation cause one build and one ca.crl-published event.
package authority
