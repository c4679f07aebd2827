package authority

import "time"

// SetResponderPoll sets the longest wait of RunOCSPResponders, so that tests
// that move the clock need not wait a minute.
func SetResponderPoll(a *Authority, d time.Duration) { a.responderPoll = d }
