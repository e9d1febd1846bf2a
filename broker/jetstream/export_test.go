package jetstream

// SetBeforeCommit sets a function run before a batch's commit message is sent.
func (b *Broker) SetBeforeCommit(f func()) { b.beforeCommit = f }
