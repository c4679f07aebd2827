// Package kektest is the conformance suite every datakey.KEK implementation runs.
package kektest
