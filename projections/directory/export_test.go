package directory

// SetPageSize makes p's sweeps list the directory n entries a page, so that a
// test with a few entries crosses pages.
func SetPageSize(p *Publisher, n uint32) { p.pageSize = n }
