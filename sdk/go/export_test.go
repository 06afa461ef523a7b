package agentrouter

// Idle says whether no refresh is in flight, so a test can let a background refresh end
// before it moves its fake clock.
func (c *KeySetCache) Idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flight == nil
}
