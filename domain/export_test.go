package domain

import "context"

// Withdraw is withdraw: the tests put a lost reissue's withdrawal at a chosen
// point.
func (h *Handlers) Withdraw(ctx context.Context, actor Actor, serial Serial) error {
	return h.withdraw(ctx, actor, serial)
}
