// Package kektest is the conformance suite every keyvault.KEK implementation runs.
package kektest
