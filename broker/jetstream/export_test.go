package jetstream

// SetBeforeCommit sets a function run before a batch's commit message is sent.
func (b *Broker) SetBeforeCommit(f func()) { b.beforeCommit = f }

// CheckStream asks the broker to check its stream, as a feed error does.
func (b *Broker) CheckStream() { b.checkStream() }

// SubjectOf returns the subject of channel under opts' subject prefix.
func SubjectOf(opts Options, channel string) string {
	return opts.withDefaults().SubjectPrefix + "." + encodeToken(channel)
}
