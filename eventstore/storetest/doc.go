// Package storetest is the conformance suite every eventstore.Store runs: ordering,
// optimistic concurrency under many writers, large payloads, reads from any
// position, Follow across the catch-up/live boundary, cancellation and reopening.
//
// An implementation's test calls Run with a Harness that creates empty backing
// storage and opens stores on it:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) storetest.Opener {
//			dir := t.TempDir()
//			return func(t *testing.T) eventstore.Store { ... open on dir ... }
//		})
//	}
package storetest
