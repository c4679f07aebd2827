// Package signertest is the conformance suite every signer.Provider runs.
package signertest
