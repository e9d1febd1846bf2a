package memory

import "time"

// EvictIdle runs one eviction pass now (tests).
func (b *Broker) EvictIdle() int { return b.evictIdle(time.Now()) }
