package agentrouter

import (
	"math/big"
	"sync"
)

// Idle says whether no refresh is in flight, so a test can let a background refresh end
// before it moves its fake clock.
func (c *KeySetCache) Idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flight == nil
}

// primalityTests counts the primality tests run, by modulus, for PrimalityTestsOf.
var primalityTests = struct {
	sync.Mutex
	of map[string]int
}{of: map[string]int{}}

func init() {
	onPrimalityTest = func(n *big.Int) {
		primalityTests.Lock()
		defer primalityTests.Unlock()
		primalityTests.of[string(n.Bytes())]++
	}
}

// PrimalityTestsOf says how many primality tests of n the package has run: a spy that counts
// by modulus, so tests running in parallel on other keys do not disturb the count.
func PrimalityTestsOf(n *big.Int) int {
	primalityTests.Lock()
	defer primalityTests.Unlock()
	return primalityTests.of[string(n.Bytes())]
}
