package jetstream

import (
	"fmt"
	"strings"
)

// Channel names become one NATS subject token after the stream's subject prefix. The
// characters a channel name usually has ([A-Za-z0-9:-]) stay as they are, so subjects
// read like their channels ("board:demo" is prefix.board:demo); every other byte,
// including the token separator ".", the wildcards "*" and ">", white space and the
// escape byte "_" itself, becomes "_" and two upper-case hex digits. The mapping is
// reversible for every byte string, so every channel name the service accepts round-trips.

// encodeToken returns the subject token of a channel name.
func encodeToken(channel string) string {
	plain := true
	for i := 0; i < len(channel); i++ {
		if !keep(channel[i]) {
			plain = false
			break
		}
	}
	if plain {
		return channel
	}
	var b strings.Builder
	b.Grow(len(channel) + 8)
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(channel); i++ {
		c := channel[i]
		if keep(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('_')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xF])
	}
	return b.String()
}

// keep reports whether a byte stands for itself in a subject token.
func keep(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == ':' || c == '-'
}

// decodeToken returns the channel name of a subject token made by encodeToken.
func decodeToken(token string) (string, error) {
	if !strings.Contains(token, "_") {
		return token, nil
	}
	var b strings.Builder
	b.Grow(len(token))
	for i := 0; i < len(token); i++ {
		c := token[i]
		if c != '_' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(token) {
			return "", fmt.Errorf("subject token %q: escape at %d cut short", token, i)
		}
		hi, ok1 := unhex(token[i+1])
		lo, ok2 := unhex(token[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("subject token %q: bad escape at %d", token, i)
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
